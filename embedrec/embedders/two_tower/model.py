"""Learned two-tower user/item vectors (torch): the towers, the vectors, the model file.

Each tower is an id embedding plus an MLP over the tower's declared features (see
`features.py`); ids are dropped at random during training so that the feature path alone
gives usable vectors to new users and items (id index 0 is "unknown"). With `features=False`
and `loss="bpr"` the same model is plain BPR matrix factorisation (Rendle et al., UAI 2009).

Files: `save(path)` writes the state dict to `path` and the config, the declared features,
their fitted encodings and the id vocabularies to `path.with_suffix(".json")`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from embedrec.embedders.base import resolve_device
from embedrec.embedders.two_tower.encoders import TowerEncoder
from embedrec.embedders.two_tower.features import Fitted, TextFn, Towers, TowerSpec
from embedrec.embedders.two_tower.sequence import (
    SequenceShape,
    SequenceTower,
    encode_histories,
    frame_histories,
)


class TwoTowerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(64, ge=1)
    """Size of the user and item vectors."""
    hidden: int = Field(128, ge=1)
    """Width of each tower's hidden layer over the features."""
    features: bool = True
    """Use the towers' declared features; False: ids only."""
    text: bool = True
    """Use the declared text features (needs `features`)."""
    text_components: int = Field(32, ge=0)
    """Project text embeddings onto their top principal components (0: keep all)."""
    loss: Literal["softmax", "bpr"] = "softmax"
    """softmax (over the `negatives`) or bpr (pairwise, one sampled negative)."""
    negatives: Literal["in-batch", "all"] = "in-batch"
    """softmax: the batch's other items as negatives (with `logq`), or every item of the
    catalogue (the full softmax: no sampling, so no correction; for catalogues of up to some
    tens of thousands of items)."""
    normalize: bool = True
    """Unit-length vectors (cosine scores)."""
    item_bias: bool = False
    """The last of the `dim` coordinates is an item bias: the user tower's is fixed at 1,
    so score = u . v + b_i stays one dot product (needs `normalize` off)."""
    temperature: float = Field(0.2, gt=0)
    """softmax: the logits are divided by it."""
    logq: bool = True
    """softmax: correct in-batch negatives for item popularity (logQ correction)."""
    id_dropout: float = Field(0.1, ge=0, lt=1)
    """Share of id embeddings dropped in training, so features carry cold items."""
    init_std: float | None = Field(None, gt=0)
    """Standard deviation of the id embeddings at the start; None: 0.1 with the softmax
    loss, 0.01 with BPR. Small starts matter for BPR: its factor updates scale with the
    other side's factors, so tiny ones let the item biases (popularity) settle first, as in
    Cornac, whose U(-0.5, 0.5)/k start has a standard deviation of 0.29/k."""
    epochs: int = Field(40, ge=1)
    """Most passes over the interactions."""
    batch_size: int = Field(1024, ge=2)
    """Interactions a training step."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """sgd: plain SGD with `lr` the step per example (the batch's summed loss), as BPR's
    own per-triple updates take it."""
    lr: float = Field(2e-3, gt=0)
    """Learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """Adam's weight decay."""
    l2: float = Field(0.0, ge=0)
    """BPR only: weight of the squared norms of each triple's embeddings (user, positive,
    negative), as BPR regularises every update."""
    reject_positives: bool = False
    """BPR only: a sampled negative the user interacted with is skipped, not trained on."""
    patience: int = Field(3, ge=1)
    """Epochs without a better validation NDCG@10 before stopping."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of each user's training interactions held out for early stopping; 0 disables it."""
    refit: bool = True
    """After early stopping, retrain on all training data for the best number of epochs."""
    seed: int = 42
    """Seed of initialisation, sampling and the validation split."""
    threads: int = Field(1, ge=0)
    """Torch CPU threads while training; 1 avoids spin-waiting on a shared, busy machine; 0:
    as many as torch has in this process (every core, or each `evaluate` worker's share)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    user_encoder: Literal["static", "sequence"] = "static"
    """static: a user is an id embedding plus their features; sequence: causal
    self-attention over their last `history` items (`sequence.py`), trained next-item."""
    history: int = Field(50, ge=1)
    """sequence: the most recent items a user vector reads."""
    layers: int = Field(2, ge=1)
    """sequence: self-attention blocks (attention and feed-forward, each with a residual)."""
    heads: int = Field(2, ge=1)
    """sequence: attention heads of each block; `dim` must be a multiple of it."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """sequence: dropout of the attention weights and each block's outputs in training."""
    time_buckets: int = Field(0, ge=0)
    """sequence: embed the gap to the previous item in this many log2-of-minutes buckets
    (0: no time input)."""
    staleness_buckets: int = Field(0, ge=0)
    """sequence: embed the time from the user's last history item to the query's "now" in
    this many log2-of-minutes buckets (24 reach 8 years), joined to the sequence output as a
    shift and a gate towards the `prior`, so a stale history can lean on what is popular now
    (0: no such input). In training "now" is each target's time; `evaluate` queries at the
    training part's last interaction; `/recommend` at the request's `now` (default: the time
    of the request)."""
    prior: bool = True
    """sequence: also fit the query of a user with no history (a learned prior plus their
    features) to every training target: a popularity prior for new users. Off, that query
    is untrained; on ML-100k it cost about 0.008 NDCG@10 on leave-last-out (every test user
    has a history) and gained 0.15 on the temporal split (two thirds have none)."""
    recency_days: float = Field(0.0, ge=0)
    """sequence: weigh each training target by 0.5 ** (its age in days before the last
    training interaction / recency_days), so recent behaviour, and the popularity prior that
    users with no history get, count more (0: every target the same)."""
    popularity_days: float = Field(0.0, ge=0)
    """sequence: add to each item's score a learned weight (one per staleness bucket, so a
    stale or new user can lean on it more) times log(1 + the item's interactions in the
    trailing `popularity_days` before "now"), "now" as for `staleness_buckets`: each target's
    time in training (counts strictly before it), the training part's last interaction in
    `evaluate` (0: off). Served vectors gain one coordinate (the item's log count as of the
    end of training, snapshot stored with the model; the user's weight), so stores must use
    the dot metric (ingest creates it so, ingest and serve refuse another), and the served
    popularity is that snapshot until the model is retrained (`popularity.py`)."""
    ensemble: int = Field(1, ge=1)
    """Train this many models, alike but for their seeds (`seed`, `seed` + 1, ...), and serve
    them as one: the user and item vectors are the members' side by side (the user's divided
    by `ensemble`), so one dot product is the mean of the members' scores. Evens out the
    scatter between seeds; training takes `ensemble` times as long and the vectors are
    `ensemble` times as wide."""

    @model_validator(mode="after")
    def _bias_unnormalised(self) -> TwoTowerConfig:
        if self.item_bias and (self.normalize or self.dim < 2):
            raise ValueError("item_bias needs normalize = false and dim >= 2")
        if self.user_encoder == "sequence":
            if self.loss != "softmax" or self.item_bias:
                raise ValueError(
                    "the sequence user encoder trains with loss = softmax, no item_bias"
                )
            if self.dim % self.heads:
                raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        elif self.popularity_days > 0:
            raise ValueError('popularity_days needs user_encoder = "sequence"')
        return self

    @property
    def sequence(self) -> bool:
        return self.user_encoder == "sequence"

    def shape(self) -> SequenceShape:
        return SequenceShape(
            self.dim, self.hidden, self.history, self.layers, self.heads, self.dropout,
            self.time_buckets, self.normalize, self.prior, self.staleness_buckets,
            self.temperature if self.popularity_days > 0 else 0.0,
        )  # fmt: skip

    @property
    def metric(self) -> str | None:
        """The store metric the served vectors need (None: any): the popularity coordinate
        must not be rescaled, so `dot`."""
        return "dot" if self.popularity_days > 0 else None

    @property
    def vector_dim(self) -> int:
        """Width of the served user and item vectors: `dim`, plus the popularity coordinate,
        for each member of the `ensemble`."""
        return self.ensemble * (self.dim + (self.popularity_days > 0))

    def member(self, k: int) -> TwoTowerConfig:
        """The config of the `ensemble`'s k-th member (from 0): one model, seed `seed` + k."""
        return self.model_copy(update={"ensemble": 1, "seed": self.seed + k})


class Vocab(BaseModel):
    """Ids with a learned embedding (1-based; 0 is unknown)."""

    users: dict[str, int]
    items: dict[str, int]


def used_towers(towers: Towers | None, config: TwoTowerConfig) -> Towers:
    """The declared features this config uses: none without `features`, no text without
    `text`."""
    towers = towers or Towers()

    def keep(spec: TowerSpec) -> TowerSpec:
        if not config.features:
            return TowerSpec(id=spec.id)
        kept = [f for f in spec.features if config.text or f.kind != "text"]
        return TowerSpec(id=spec.id, features=kept)

    return Towers(user=keep(towers.user), item=keep(towers.item))


class _Tower(nn.Module):
    def __init__(self, n_ids: int, n_features: int, cfg: TwoTowerConfig, user: bool) -> None:
        super().__init__()
        # the user side of an item bias: its last coordinate is 1
        self.unit_last = cfg.item_bias and user
        # sparse gradients: plain SGD then touches only the rows of the batch's ids
        sparse = cfg.optimizer == "sgd" and cfg.weight_decay == 0
        self.ids = nn.Embedding(n_ids + 1, cfg.dim, sparse=sparse)
        default_std = 0.1 if cfg.loss == "softmax" else 0.01
        nn.init.normal_(self.ids.weight, std=cfg.init_std or default_std)
        self.mlp = (
            nn.Sequential(
                nn.Linear(n_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim)
            )
            if n_features
            else None
        )
        self.normalize = cfg.normalize

    def forward(self, ids: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        out = self.ids(ids)
        if self.mlp is not None and feats is not None:
            out = out + self.mlp(feats)
        if self.unit_last:
            out = torch.cat([out[:, :-1], torch.ones_like(out[:, -1:])], dim=1)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out


def _frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _id_column(frame: pd.DataFrame, canonical: str, spec: TowerSpec, what: str) -> str:
    """Rows name the id `user_id`/`item_id`, the table's own id column, or `id` (ingestion)."""
    for name in (canonical, spec.id, "id"):
        if name in frame.columns:
            return name
    raise ValueError(f"{what} rows lack an id field ({canonical!r} or {spec.id!r})")


def side_by_side(vectors: list[np.ndarray], user: bool) -> np.ndarray:
    """An `ensemble`'s vectors: its members' side by side, the users' divided by their
    number, so that the dot product is the mean of the members' scores."""
    out = np.hstack(vectors)
    return out / np.float32(len(vectors)) if user else out


def _part(vectors: np.ndarray, k: int, width: int) -> np.ndarray:
    """The k-th member's part of an `ensemble`'s served item vectors (L, width x members)."""
    v = np.asarray(vectors, dtype=np.float32)
    return v[..., k * width : (k + 1) * width] if v.size else v


def index(values: Sequence[Any], vocab: dict[str, int]) -> np.ndarray:
    return np.array([vocab.get(str(v), 0) for v in values], dtype=np.int64)


class TwoTowerModel:
    """Train with `fitting.fit_two_tower`, or `load` a saved one; then `user_vectors` /
    `item_vectors`."""

    def __init__(
        self,
        config: TwoTowerConfig,
        towers: Towers,
        vocab: Vocab,
        encoders: tuple[TowerEncoder, TowerEncoder],
        text_fn: TextFn | None = None,
        members: list[TwoTowerModel] | None = None,
    ) -> None:
        self.config, self.towers, self.vocab = config, towers, vocab
        self.user_encoder, self.item_encoder = encoders
        self._text_fn = text_fn
        self.device = torch.device(resolve_device(config.device))
        self.history: list[dict[str, float]] = []
        # `ensemble` > 1: the members hold the towers (`members`, or fresh ones to load into);
        # this model serves their vectors side by side
        self.members: list[TwoTowerModel] = []
        if config.ensemble > 1:
            self.members = members or [
                TwoTowerModel(config.member(k), towers, vocab, encoders, text_fn)
                for k in range(config.ensemble)
            ]
            return
        self.user_tower: nn.Module = (
            SequenceTower(self.user_encoder.width, config.shape())
            if config.sequence
            else _Tower(len(vocab.users), self.user_encoder.width, config, user=True)
        ).to(self.device)
        self.item_tower = _Tower(len(vocab.items), self.item_encoder.width, config, user=False).to(
            self.device
        )
        self.history: list[dict[str, float]] = []
        # `popularity_days`: log(1 + count) per item vocabulary index (0: unknown) as of the
        # end of training (popularity.py); set by training, saved with the model
        self.popularity = torch.zeros(len(vocab.items) + 1)

    # ---------------------------------------------------------------- features

    def user_features(self, users: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        column = _id_column(users, "user_id", self.towers.user, "user")
        ids = torch.from_numpy(index(users[column].tolist(), self.vocab.users))
        feats = self.user_encoder.encode(users, self._text_fn)
        return ids.to(self.device), None if feats is None else torch.from_numpy(feats).to(
            self.device
        )

    def item_features(self, items: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        column = _id_column(items, "item_id", self.towers.item, "item")
        ids = torch.from_numpy(index(items[column].tolist(), self.vocab.items))
        feats = self.item_encoder.encode(items, self._text_fn)
        return ids.to(self.device), None if feats is None else torch.from_numpy(feats).to(
            self.device
        )

    def validate_user(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A new user's features checked against the ones this model declares."""
        return self.user_encoder.validate_row(row)

    # ---------------------------------------------------------------- vectors

    @torch.no_grad()
    def user_vectors(
        self,
        users: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        history: pd.DataFrame | None = None,
        items: pd.DataFrame | None = None,
        now: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """Vectors for user rows (id and the declared features); an unknown id gets its
        vector from the features alone. The sequence encoder reads each user's interactions
        in `history` (user_id, item_id, optional timestamp), whose items' features are rows
        of `items`, as of `now` (epoch seconds, one or one per user row; None: unknown); the
        static one ignores them."""
        users = _frame(users)
        if self.members:
            got = [
                m.user_vectors(users, history=history, items=items, now=now) for m in self.members
            ]
            return side_by_side(got, user=True)
        if self.config.sequence:
            found = frame_histories(self.item_vectors, users, history, items, self.config.history)
            return self.history_vectors(found, users, now)
        ids, feats = self.user_features(users)
        self.user_tower.eval()
        return self.user_tower(ids, feats).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def history_vectors(
        self,
        histories: Sequence[tuple[np.ndarray, np.ndarray]],
        users: pd.DataFrame | None,
        now: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """Sequence encoder: one vector per history, each (item vectors (L, dim) as the item
        tower gives them, oldest first; epoch seconds (L,), NaN where unknown), with the
        matching user row's declared features (`users`: None, or one row per history), queried
        at `now` (epoch seconds, one or one per history; None: unknown). The item vectors of
        an `ensemble` are its served ones, each member's part side by side."""
        if self.members:
            width = self.members[0].config.vector_dim
            got = [
                m.history_vectors([(_part(v, k, width), t) for v, t in histories], users, now)
                for k, m in enumerate(self.members)
            ]
            return side_by_side(got, user=True)
        feats = None
        if users is not None and self.towers.user.features:
            feats = self.user_features(users)[1]
        if self.user_tower.training:  # eval() walks every submodule: a tenth of a 1-history pass
            self.user_tower.eval()
        shape = self.config.shape()
        return encode_histories(self.user_tower, histories, feats, shape, self.device, now=now)

    @torch.no_grad()
    def item_vectors(self, items: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Vectors for item rows (id and the declared features); an unknown id gets its
        vector from the features alone."""
        if self.members:
            return side_by_side([m.item_vectors(items) for m in self.members], user=False)
        ids, feats = self.item_features(_frame(items))
        self.item_tower.eval()
        out = self.item_tower(ids, feats)
        if self.config.popularity_days > 0:  # the snapshot of each item's trailing log count
            out = torch.cat([out, self.popularity.to(out.device)[ids, None]], dim=1)
        return out.cpu().numpy().astype(np.float32)

    # ---------------------------------------------------------------- state and files

    def state(self) -> dict[str, Any]:
        if self.members:  # the fitted text encodings are shared: saved once
            text = {"user": self.user_encoder.state(), "item": self.item_encoder.state()}
            members = [{k: v for k, v in m.state().items() if k != "text"} for m in self.members]
            return copy.deepcopy({"text": text}) | {"members": members}
        return copy.deepcopy(
            {
                "user": self.user_tower.state_dict(),
                "item": self.item_tower.state_dict(),
                "text": {"user": self.user_encoder.state(), "item": self.item_encoder.state()},
                "popularity": self.popularity,
            }
        )

    def load_state(self, state: dict[str, Any]) -> None:
        if self.members:
            for member, part in zip(self.members, state["members"], strict=True):
                member.load_state(part)
            return
        self.user_tower.load_state_dict(state["user"])
        self.item_tower.load_state_dict(state["item"])
        if "popularity" in state:  # files saved before `popularity_days` lack it
            self.popularity = state["popularity"]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)
        meta = {
            "config": self.config.model_dump(),
            "towers": self.towers.model_dump(),
            "fitted": {
                "user": [f.model_dump() for f in self.user_encoder.fitted],
                "item": [f.model_dump() for f in self.item_encoder.fitted],
            },
            "vocab": self.vocab.model_dump(),
            "history": self.history,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, text_fn: TextFn | None = None, device: str | None = None
    ) -> TwoTowerModel:
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"two-tower model needs {path} and {meta_path}")
        meta = json.loads(meta_path.read_text())
        if "towers" not in meta:
            raise ValueError(f"{meta_path}: a model file without declared features; retrain it")
        # a file saved before `prior` existed holds a tower without one
        config = TwoTowerConfig.model_validate({"prior": False, **meta["config"]})
        if device is not None:
            config = config.model_copy(update={"device": device})
        towers = Towers.model_validate(meta["towers"])
        state = torch.load(path, map_location="cpu", weights_only=True)
        encoders = tuple(
            TowerEncoder(
                getattr(towers, side),
                [Fitted.model_validate(f) for f in meta["fitted"][side]],
                state["text"][side],
            )
            for side in ("user", "item")
        )
        model = cls(config, towers, Vocab.model_validate(meta["vocab"]), encoders, text_fn)  # type: ignore[arg-type]
        model.load_state(state)
        model.history = meta.get("history", [])
        return model
