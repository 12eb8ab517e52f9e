"""Hyperparameters of the next-item models (`[baselines.*]` tables of an experiment config).

The session baselines' defaults are common values that `embedrec tune` then chooses per
protocol. The Cornac models' defaults are Cornac's own (the constructor defaults of cornac
3.0.1, `cornac/models/<model>/recom_<model>.py`, which follow each paper), except the epochs
and the negatives, set for the cost on 2 CPU cores (`CORNAC_SEQ_PARAMS`); `embedrec tune`
searches them per protocol (search_space.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CORNAC_SEQ_PARAMS = (
    "Cornac 3.0.1's constructor defaults (cornac/models/{sasrec,bert4rec,gru4rec,fpmc,spop}/"
    "recom_*.py: embedding 100, 2 blocks, 1 head, dropout 0.2, max_len 50, Adam lr 0.001 for "
    "the transformers, as in Kang & McAuley, ICDM 2018; GRU4Rec's 100 units, lr 0.05, as in "
    "Hidasi & Karatzoglou, CIKM 2018), with fewer epochs, 256 sampled negatives and, in "
    "configs/next_item.toml and shop_next_item.toml, max_len 20, for the cost on 2 CPU "
    "cores (docs/leaderboard.md, 'Next item')"
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecentPopularityParams(_Params):
    days: float = Field(14.0, gt=0)
    """The trailing window: interactions in the `days` days up to the anchor count."""
    anchor: Literal["global", "user"] = "global"
    """global: the window ends at the training part's last interaction (the same list for
    everyone); user: at the user's own last training interaction."""


class TransitionsParams(_Params):
    history: int = Field(1, ge=1, le=50)
    """How many of the user's latest items vote for their successors."""
    decay: float = Field(0.5, gt=0, le=1)
    """The vote of the j-th latest item (j = 0 the last) is decay ** j."""


class _CornacTorch(_Params):
    n_epochs: int = Field(5, ge=1)
    """Training passes over the sessions."""
    batch_size: int = Field(512, ge=1)
    """Sessions a training step."""
    learning_rate: float = Field(1e-3, gt=0)
    """The learning rate (of Adam, for SASRec and BERT4Rec)."""
    n_sample: int = Field(256, ge=0)
    """Popularity-sampled negatives shared by a batch (Cornac's default: 2048)."""
    seed: int = 42
    """Seed of initialisation, sampling and batching."""


class SASRecParams(_CornacTorch):
    embedding_dim: int = Field(100, ge=1)
    """Size of the item (and position) embeddings."""
    max_len: int = Field(50, ge=1)
    """The most recent items of a session the model reads."""
    num_blocks: int = Field(2, ge=1)
    """Transformer blocks."""
    num_heads: int = Field(1, ge=1)
    """Attention heads of each block."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout in the blocks and on the embeddings while training."""
    loss: Literal["ce", "bce", "bpr", "bpr-max"] = "ce"
    """Cross-entropy over the sampled negatives, binary cross-entropy, BPR or BPR-max."""


class BERT4RecParams(SASRecParams):
    pass


class GRU4RecParams(_CornacTorch):
    layers: list[int] = [100]
    """Units of each GRU layer."""
    learning_rate: float = Field(0.05, gt=0)
    """The learning rate of Cornac's Adagrad with momentum (IndexedAdagradM)."""
    dropout_p_embed: float = Field(0.0, ge=0, lt=1)
    """Dropout on the GRU's input (the item's embedding) while training."""
    dropout_p_hidden: float = Field(0.0, ge=0, lt=1)
    """Dropout between the GRU layers while training."""
    momentum: float = Field(0.0, ge=0, lt=1)
    """Momentum of Cornac's Adagrad (IndexedAdagradM); 0: none."""
    loss: Literal["cross-entropy", "bpr-max", "top1"] = "cross-entropy"
    """Cross-entropy, BPR-max or TOP1 over the batch's and the sampled negatives."""


class FPMCParams(_CornacTorch):
    embedding_dim: int = Field(100, ge=1)
    """Size of the user, item and previous-item factor vectors."""
    learning_rate: float = Field(0.05, gt=0)
    """The learning rate of Cornac's Adagrad with momentum (IndexedAdagradM)."""
    loss: Literal["bpr", "ce"] = "bpr"
    """BPR over sampled negatives, or cross-entropy."""


class SPopParams(_Params):
    use_session_popularity: bool = True
    """Add to each item's global popularity its count in the user's own history (the
    session); false: global popularity alone."""
