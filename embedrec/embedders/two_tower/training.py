"""Training the two-tower model on (user_id, item_id) interactions.

In-batch sampled softmax over temperature-scaled cosine scores, with the log-q correction
(Yi et al., "Sampling-bias-corrected neural modeling", RecSys 2019): each in-batch logit is
lowered by the log of the item's sampling probability, here its share of training
interactions. With `negatives="all"`, the full softmax over every item of the catalogue
instead: nothing sampled, nothing to correct, and affordable while the catalogue is small.
An optional `weight` column scales each interaction's loss. With `loss="bpr"` one uniformly
drawn negative per positive (Rendle et al., UAI 2009); with `reject_positives`, `item_bias`
and `optimizer="sgd"` it is the algorithm as Cornac implements it, which Adam-trained BPR
without them falls short of on MovieLens (see docs/leaderboard.md).

Early stopping holds out a share of each user's interactions (Recommenders' stratified split)
and watches NDCG@10 on it; `refit` then retrains on everything for the best epoch count.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.common.progress import Progress
from embedrec.embedders.two_tower.encoders import TowerEncoder
from embedrec.embedders.two_tower.features import TextFn, Towers
from embedrec.embedders.two_tower.model import (
    TwoTowerConfig,
    TwoTowerModel,
    Vocab,
    index,
    used_towers,
)
from embedrec.ranking.metrics import hit_matrix, ndcg_at_k
from embedrec.ranking.splits import stratified_split

log = logging.getLogger(__name__)


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and a fixed thread count (0: keep torch's);
    restore after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads or old_threads)
    # deterministic cuBLAS needs a fixed workspace, set before CUDA's first matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _vocab(values: pd.Series) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(sorted({str(x) for x in values}))}


def _rows(table: pd.DataFrame | None, column: str, ids: list[str], what: str) -> pd.DataFrame:
    """The table's rows for `ids`, in that order; an id the table lacks is an error."""
    if table is None:
        return pd.DataFrame({column: ids})
    if column not in table.columns:
        raise ValueError(f"the {what} table lacks its id column {column!r}")
    table = table.assign(**{column: table[column].astype(str)}).drop_duplicates(column)
    missing = sorted(set(ids) - set(table[column]))
    if missing:
        raise ValueError(
            f"interactions mention {what} {missing[0]!r} (and {len(missing) - 1} more), "
            f"which the {what} table lacks"
        )
    return table.set_index(column).loc[ids].reset_index()


class TrainData:
    """Feature tensors for every known user and item, indexed by vocabulary index - 1."""

    def __init__(self, model: TwoTowerModel, users: pd.DataFrame, items: pd.DataFrame) -> None:
        self.all_user_ids, self.all_user_feats = model.user_features(users)
        self.all_item_ids, self.all_item_feats = model.item_features(items)

    def user_feats(self, idx: torch.Tensor) -> torch.Tensor | None:
        f = self.all_user_feats
        return None if f is None else f[idx.to(f.device) - 1]

    def item_feats(self, idx: torch.Tensor) -> torch.Tensor | None:
        f = self.all_item_feats
        return None if f is None else f[idx.to(f.device) - 1]


Holdout = Callable[[pd.DataFrame, TwoTowerConfig], tuple[pd.DataFrame, pd.DataFrame]]
TrainFn = Callable[[TwoTowerModel, TrainData, pd.DataFrame, pd.DataFrame | None, int, bool], int]


@dataclass(frozen=True)
class Trainer:
    """How a user encoder is trained: the part of the training interactions held out for
    early stopping, and the loop (returning the best epoch count)."""

    holdout: Holdout
    train: TrainFn


def _stratified_holdout(
    ratings: pd.DataFrame, config: TwoTowerConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return stratified_split(ratings, 1 - config.val_fraction, filter_by="user", seed=config.seed)


def fit(
    ratings: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    config: TwoTowerConfig,
    *,
    trainer: Trainer,
    towers: Towers | None = None,
    text_fn: TextFn | None = None,
    progress: bool = True,
) -> TwoTowerModel:
    """Train on (user_id, item_id) interactions with the user encoder's `trainer` (the
    config picks it: `fitting.fit_two_tower`). Every interaction counts as a positive. Only ids
    seen in `ratings` get an id embedding; the encoders are fitted on those ids' rows of
    `users` and `items`."""
    missing = [c for c in ("user_id", "item_id") if c not in ratings.columns]
    if missing:
        raise ValueError(f"interactions lack field(s) {missing}; they have {list(ratings.columns)}")
    towers = used_towers(towers, config)
    vocab = Vocab(users=_vocab(ratings["user_id"]), items=_vocab(ratings["item_id"]))
    user_rows = _rows(users, "user_id", list(vocab.users), "user")
    item_rows = _rows(items, "item_id", list(vocab.items), "item")
    started = time.perf_counter()
    encoders = (
        TowerEncoder.fit(towers.user, user_rows, text_fn, config.text_components),
        TowerEncoder.fit(towers.item, item_rows, text_fn, config.text_components),
    )
    parts = (towers, vocab, encoders, text_fn)
    if config.ensemble > 1:  # each member trained alone, as if it were the config's model
        members = [
            _train_one(config.member(k), parts, (user_rows, item_rows), ratings, trainer, progress)
            for k in range(config.ensemble)
        ]
        model = TwoTowerModel(config, *parts, members=members)
        model.history = [row | {"member": k} for k, m in enumerate(members) for row in m.history]
    else:
        model = _train_one(config, parts, (user_rows, item_rows), ratings, trainer, progress)
    log.info("two-tower trained in %.1f s", time.perf_counter() - started)
    return model


def _train_one(
    config: TwoTowerConfig,
    parts: tuple[Towers, Vocab, tuple[TowerEncoder, TowerEncoder], TextFn | None],
    rows: tuple[pd.DataFrame, pd.DataFrame],
    ratings: pd.DataFrame,
    trainer: Trainer,
    progress: bool,
) -> TwoTowerModel:
    """One model (not an ensemble) trained with early stopping and `refit` as configured."""
    with deterministic(config.seed, config.threads):
        model = TwoTowerModel(config, *parts)
        data = TrainData(model, *rows)
        train = trainer.train
        if config.val_fraction > 0:
            fit_part, val_part = trainer.holdout(ratings, config)
            best = train(model, data, fit_part, val_part, config.epochs, progress)
            if config.refit:
                torch.manual_seed(config.seed)
                model = TwoTowerModel(config, *parts)
                train(model, data, ratings, None, best, progress)
        else:
            train(model, data, ratings, None, config.epochs, progress)
    return model


def _train(
    model: TwoTowerModel,
    data: TrainData,
    ratings: pd.DataFrame,
    val: pd.DataFrame | None,
    epochs: int,
    progress: bool,
) -> int:
    """Train for up to `epochs`; with `val`, stop early on validation NDCG@10, keep the best
    weights and return the best epoch count."""
    cfg = model.config
    u = torch.from_numpy(index(ratings["user_id"].tolist(), model.vocab.users))
    i = torch.from_numpy(index(ratings["item_id"].tolist(), model.vocab.items))
    w = (
        torch.from_numpy(ratings["weight"].to_numpy(np.float32)).to(model.device)
        if "weight" in ratings.columns
        else None
    )
    sampling = Sampling.of(u, i, len(model.vocab.items), model.device)
    opt = optimizer(model)
    gen = torch.Generator().manual_seed(cfg.seed)

    def epoch() -> float:
        total = 0.0
        order = torch.randperm(len(u), generator=gen)
        for start in range(0, len(u), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            loss = _loss(
                model, data, u[batch], i[batch], None if w is None else w[batch], sampling, gen
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        return total / len(u)

    validate = None if val is None else lambda: _validate(model, data, ratings, val)
    name = "two-tower" if cfg.loss == "softmax" else "bpr"
    return run_epochs(model, epochs, name, progress, epoch, validate)


def run_epochs(
    model: TwoTowerModel,
    epochs: int,
    name: str,
    progress: bool,
    epoch: Callable[[], float],
    validate: Callable[[], float] | None,
) -> int:
    """Call `epoch` (one pass, returning its mean loss) up to `epochs` times; with
    `validate` (NDCG@10 on held-out data), stop after `patience` epochs without a better
    one, keep the best weights and return the best epoch count."""
    best, best_epoch, best_state, bad = -math.inf, epochs, None, 0
    desc = name + (" (early stopping)" if validate is not None else "")
    with Progress(epochs, desc, "epochs", enabled=progress) as bar:
        for n in range(epochs):
            model.user_tower.train()
            model.item_tower.train()
            stats = {"epoch": n + 1, "loss": epoch()}
            if validate is not None:
                stats["val_ndcg@10"] = validate()
                if stats["val_ndcg@10"] > best:
                    best, best_epoch, bad = stats["val_ndcg@10"], n + 1, 0
                    best_state = model.state()
                else:
                    bad += 1
            model.history.append(stats)
            bar.update(1, **{k: round(v, 4) for k, v in stats.items() if k != "epoch"})
            if validate is not None and bad >= model.config.patience:
                break
    if best_state is not None:
        model.load_state(best_state)
    return best_epoch


STATIC = Trainer(_stratified_holdout, _train)


@dataclass
class Sampling:
    """What the losses need to know of the training interactions: each item's log share of
    them (the log-q correction) and the (user, item) pairs as sorted keys (BPR's rejection
    of negatives the user interacted with)."""

    log_q: torch.Tensor
    positives: torch.Tensor
    n_items: int

    @classmethod
    def of(cls, u: torch.Tensor, i: torch.Tensor, n_items: int, device: torch.device) -> Sampling:
        counts = torch.bincount(i, minlength=n_items + 1).double()
        log_q = torch.log(counts.clamp(min=1) / counts.sum()).float().to(device)
        return cls(log_q, torch.unique(u * (n_items + 1) + i), n_items)

    def interacted(self, u: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        # a binary search in the sorted keys: torch.isin sorts them again on every call
        keys = u * (self.n_items + 1) + j
        at = torch.searchsorted(self.positives, keys).clamp(max=len(self.positives) - 1)
        return self.positives[at] == keys


def optimizer(model: TwoTowerModel) -> torch.optim.Optimizer:
    cfg = model.config
    params = [*model.user_tower.parameters(), *model.item_tower.parameters()]
    if cfg.optimizer == "sgd":  # the loss is a batch mean; lr is the step per example
        return torch.optim.SGD(params, lr=cfg.lr * cfg.batch_size, weight_decay=cfg.weight_decay)
    # foreach: one kernel per step for all parameters (the default only on CUDA)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def _loss(
    model: TwoTowerModel,
    data: TrainData,
    u: torch.Tensor,
    i: torch.Tensor,
    w: torch.Tensor | None,
    sampling: Sampling,
    gen: torch.Generator,
) -> torch.Tensor:
    cfg = model.config
    u_ids, i_ids = u.clone(), i.clone()
    if cfg.id_dropout > 0:
        u_ids[torch.rand(len(u), generator=gen) < cfg.id_dropout] = 0
        i_ids[torch.rand(len(i), generator=gen) < cfg.id_dropout] = 0
    dev = model.device
    uv = model.user_tower(u_ids.to(dev), data.user_feats(u))
    if cfg.loss == "softmax" and cfg.negatives == "all":
        return weighted_mean(full_softmax(model, data, uv, i, gen), w)
    iv = model.item_tower(i_ids.to(dev), data.item_feats(i))
    if cfg.loss == "bpr":
        return _bpr(model, data, u, uv, iv, w, sampling, gen)
    i = i.to(dev)
    # one (batch x batch) pass: the temperature on the smaller side, the log-q correction as
    # the matmul's bias, the mask in place
    logits = nn.functional.linear(
        uv / cfg.temperature, iv, -sampling.log_q[i] if cfg.logq else None
    )
    # the same item elsewhere in the batch is a positive, not a negative
    same = i[None, :] == i[:, None]
    same.fill_diagonal_(False)
    logits.masked_fill_(same, -torch.inf)
    per_row = nn.functional.cross_entropy(
        logits, torch.arange(len(i), device=dev), reduction="none"
    )
    return weighted_mean(per_row, w)


def _bpr(
    model: TwoTowerModel,
    data: TrainData,
    u: torch.Tensor,
    uv: torch.Tensor,
    iv: torch.Tensor,
    w: torch.Tensor | None,
    sampling: Sampling,
    gen: torch.Generator,
) -> torch.Tensor:
    """-log sigmoid(u.i - u.j) for one uniform negative j per positive, plus `l2` times
    the triple's squared norms; a negative the user interacted with is skipped with
    `reject_positives` (its row weighs 0)."""
    cfg, dev = model.config, model.device
    j = torch.randint(1, sampling.n_items + 1, (len(u),), generator=gen)
    jv = model.item_tower(j.to(dev), data.item_feats(j))
    diff = (uv * iv).sum(-1) - (uv * jv).sum(-1)
    reg = uv.pow(2).sum(-1) + iv.pow(2).sum(-1) + jv.pow(2).sum(-1)
    per_row = -nn.functional.logsigmoid(diff) + cfg.l2 * reg
    if cfg.reject_positives:
        per_row = per_row * (~sampling.interacted(u, j)).to(dev)
    return weighted_mean(per_row, w)


def full_softmax(
    model: TwoTowerModel,
    data: TrainData,
    uv: torch.Tensor,
    i: torch.Tensor,
    gen: torch.Generator,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each positive against every item of the catalogue; item ids are
    dropped at random across the catalogue, as positives are for in-batch negatives. `extra`
    (queries, items): added to the scores before the temperature."""
    cfg = model.config
    ids = data.all_item_ids.clone()
    if cfg.id_dropout > 0:
        ids[torch.rand(len(ids), generator=gen).to(ids.device) < cfg.id_dropout] = 0
    everything = model.item_tower(ids, data.all_item_feats)
    scores = uv @ everything.T
    logits = (scores if extra is None else scores + extra) / cfg.temperature
    return nn.functional.cross_entropy(logits, (i - 1).to(uv.device), reduction="none")


def weighted_mean(per_row: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return per_row.mean() if w is None else (per_row * w).sum() / w.sum().clamp(min=1e-12)


@torch.no_grad()
def _validate(
    model: TwoTowerModel, data: TrainData, seen: pd.DataFrame, val: pd.DataFrame
) -> float:
    model.user_tower.eval()
    model.item_tower.eval()
    uv = model.user_tower(data.all_user_ids, data.all_user_feats)
    iv = model.item_tower(data.all_item_ids, data.all_item_feats)
    return ranked_ndcg(uv @ iv.T, model.vocab, seen, val)


def ranked_ndcg(scores: torch.Tensor, vocab: Vocab, seen: pd.DataFrame, val: pd.DataFrame) -> float:
    """NDCG@10 of `scores` (every vocabulary user x item, in vocabulary order) on `val`, the
    `seen` pairs left out of the ranking."""
    su = index(seen["user_id"].tolist(), vocab.users)
    si = index(seen["item_id"].tolist(), vocab.items)
    scores[torch.from_numpy(su - 1), torch.from_numpy(si - 1)] = -torch.inf
    top = torch.topk(scores, min(10, scores.shape[1]), dim=1).indices.cpu().numpy()
    vu = index(val["user_id"].tolist(), vocab.users) - 1
    vi = index(val["item_id"].tolist(), vocab.items) - 1
    keep = vi >= 0
    users = np.unique(vu[keep])
    remap = np.full(len(vocab.users), -1)
    remap[users] = np.arange(len(users))
    hits = hit_matrix(top[users], remap[vu[keep]], vi[keep], len(vocab.items))
    n_rel = np.bincount(remap[vu[keep]], minlength=len(users))
    return ndcg_at_k(hits, n_rel, 10)
