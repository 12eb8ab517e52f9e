"""Training the sequence user encoder next-item, as SASRec is trained: each user's training
interactions in order (`ranking.splits.chronological`: by timestamp, ties in table order) are
cut from the end into windows of `history` + 1 items; at every position of a window the
causal encoder's output is scored against the next item, so every prefix of every sequence
is a training example (its context reaching back to the start of its window).

The loss is the two-tower's (`training.py`): a sampled softmax whose negatives are the
batch's other target items, with the log-q correction by each item's share of the training
interactions, or the full softmax over the catalogue with `negatives = "all"`. A batch holds
about `batch_size` positions. With `prior` (the default) every target is scored twice: from
its position's output and from the query of a user with no history (the tower's prior plus
the user's features), so that query is a popularity prior learned with the rest. With
`recency_days`, each target weighs 0.5 ** (its age in days before the last training
interaction / `recency_days`). With `staleness_buckets`, each position is queried "now" = its
target's time: its staleness is the gap from its own item to the target. With
`popularity_days`, every (query, candidate) logit gains the query's learned weight times the
candidate's trailing log count before the query's target time (`popularity.py`).

Early stopping holds out each user's last training interaction (leave-last-out inside
training) and watches NDCG@10 on it, querying every user at the last interaction of the part
it trains on (as `evaluate` does: the held-out item's own time would read the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from embedrec.embedders.two_tower.model import TwoTowerConfig, Vocab, index
from embedrec.embedders.two_tower.popularity import TrailingCounts
from embedrec.embedders.two_tower.sequence import (
    encode_histories,
    gap_buckets,
    last_time,
    pad_left,
)
from embedrec.embedders.two_tower.training import (
    Sampling,
    TrainData,
    Trainer,
    full_softmax,
    optimizer,
    ranked_ndcg,
    run_epochs,
    weighted_mean,
)
from embedrec.ranking.splits import chronological, leave_last_out

if TYPE_CHECKING:
    from embedrec.embedders.two_tower.model import TwoTowerModel


def user_sequences(ratings: pd.DataFrame, vocab: Vocab) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each vocabulary user's (item indices, epoch seconds or NaN), oldest first, in
    vocabulary order (empty for a user without interactions in `ratings`)."""
    data = chronological(ratings.assign(user_id=ratings["user_id"].astype(str)))
    users = index(data["user_id"].tolist(), vocab.users)
    items = index(data["item_id"].tolist(), vocab.items)
    times = (
        data["timestamp"].to_numpy(np.float64)
        if "timestamp" in data.columns
        else np.full(len(data), np.nan)
    )
    out = [(np.zeros(0, np.int64), np.zeros(0))] * len(vocab.users)
    for user, at in pd.Series(users).groupby(users, sort=False).indices.items():
        if user > 0:
            out[user - 1] = (items[at], times[at])
    return out


@dataclass
class Windows:
    """Training windows, left-padded to `history` positions: input item indices (0:
    padding), the next item at each position (0: none), gap buckets, staleness buckets (the
    gap from each position's item to its target), the user, each target's weight (None:
    all 1) and each target's time bin for the trailing counts (`popularity.py`; None: off)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    gaps: torch.Tensor
    since: torch.Tensor
    users: torch.Tensor
    weights: torch.Tensor | None
    bins: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        sequences: list[tuple[np.ndarray, np.ndarray]],
        n: int,
        cfg: TwoTowerConfig,
        counts: TrailingCounts | None = None,
    ) -> Windows:
        inputs, targets, gaps, since, users, times = [], [], [], [], [], []
        for user, (items, stamps) in enumerate(sequences, start=1):
            all_gaps = gap_buckets(stamps, cfg.time_buckets)
            stale = gap_buckets(stamps, cfg.staleness_buckets)
            for end in range(len(items), 1, -n):  # targets items[start:end]
                start = max(end - n, 1)
                inputs.append(items[start - 1 : end - 1])
                targets.append(items[start:end])
                gaps.append(all_gaps[start - 1 : end - 1])
                since.append(stale[start:end])
                users.append(user)
                times.append(stamps[start:end])
        days, padded = cfg.recency_days, pad_left(times, n)
        return cls(
            torch.from_numpy(pad_left(inputs, n)),
            torch.from_numpy(pad_left(targets, n)),
            torch.from_numpy(pad_left(gaps, n)),
            torch.from_numpy(pad_left(since, n)),
            torch.tensor(users, dtype=torch.int64),
            _recency(padded, days) if days > 0 else None,
            None if counts is None else torch.from_numpy(counts.bins(padded)),
        )


def _recency(times: np.ndarray, days: float) -> torch.Tensor:
    """0.5 ** (age / days), the age in days before the latest time; 1 where time is unknown."""
    known = np.isfinite(times)
    if not known.any():
        return torch.ones(times.shape)
    age = (times[known].max() - np.where(known, times, times[known].max())) / 86400.0
    return torch.from_numpy(np.power(0.5, age / days).astype(np.float32))


def _holdout(ratings: pd.DataFrame, config: TwoTowerConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's last training interaction (table order without timestamps)."""
    if "timestamp" in ratings.columns:
        return leave_last_out(ratings)
    fit_part, val_part = leave_last_out(ratings.assign(timestamp=0))
    return fit_part.drop(columns="timestamp"), val_part.drop(columns="timestamp")


def train_sequences(
    model: TwoTowerModel,
    data: TrainData,
    ratings: pd.DataFrame,
    val: pd.DataFrame | None,
    epochs: int,
    progress: bool,
) -> int:
    """Train for up to `epochs` (see `training.run_epochs`); returns the best epoch count."""
    cfg = model.config
    sequences = user_sequences(ratings, model.vocab)
    u = torch.from_numpy(index(ratings["user_id"].tolist(), model.vocab.users))
    i = torch.from_numpy(index(ratings["item_id"].tolist(), model.vocab.items))
    counts = None
    if cfg.popularity_days > 0:
        times = ratings["timestamp"] if "timestamp" in ratings.columns else pd.Series(np.nan)
        counts = TrailingCounts.of(i.numpy(), times.to_numpy(np.float64), cfg.popularity_days)
        model.popularity = counts.snapshot(len(model.vocab.items))
    windows = Windows.of(sequences, cfg.history, cfg, counts)
    sampling = Sampling.of(u, i, len(model.vocab.items), model.device)
    opt = optimizer(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_batch = max(1, cfg.batch_size // cfg.history)
    count = len(windows.users)

    def epoch() -> float:
        total, positions = 0.0, 0
        order = torch.randperm(count, generator=gen)
        for start in range(0, count, per_batch):
            batch = order[start : start + per_batch]
            loss, n = _loss(model, data, windows, batch, sampling, gen, counts)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, positions = total + loss.item() * n, positions + n
        return total / max(positions, 1)

    validate = None if val is None else lambda: _validate(model, data, sequences, ratings, val)
    return run_epochs(model, epochs, "sequence", progress, epoch, validate)


def _loss(
    model: TwoTowerModel,
    data: TrainData,
    windows: Windows,
    batch: torch.Tensor,
    sampling: Sampling,
    gen: torch.Generator,
    counts: TrailingCounts | None = None,
) -> tuple[torch.Tensor, int]:
    """The batch's (weighted) mean loss over its positions that have a next item, each
    scored from its position and, with `prior`, from the empty-history query; and the count
    of those positions."""
    cfg, dev = model.config, model.device
    inputs, targets = windows.inputs[batch], windows.targets[batch]
    mask, valid = inputs > 0, targets > 0
    # the item tower once per distinct item of the batch, ids dropped at random as in
    # the static model's training
    uniq, inverse = torch.unique(torch.cat([inputs[mask], targets[valid]]), return_inverse=True)
    ids = uniq.clone()
    if cfg.id_dropout > 0:
        ids[torch.rand(len(ids), generator=gen) < cfg.id_dropout] = 0
    vecs = model.item_tower(ids.to(dev), data.item_feats(uniq))
    n_in = int(mask.sum())
    x = torch.zeros(*inputs.shape, vecs.shape[1], device=dev)
    x[mask.to(dev)] = vecs[inverse[:n_in].to(dev)]
    feats = data.user_feats(windows.users[batch])
    since = windows.since[batch].to(dev)
    out = model.user_tower(x, mask.to(dev), windows.gaps[batch].to(dev), feats, since)
    queries, t = out[valid.to(dev)], targets[valid]
    w = None if windows.weights is None else windows.weights[batch][valid].to(dev)
    if cfg.prior:  # each target once more, from the empty-history query
        prior = model.user_tower.empty(feats, len(batch))
        queries = torch.cat([queries, prior[valid.nonzero()[:, 0].to(dev)]])
        t, w = t.repeat(2), None if w is None else w.repeat(2)
    pop = None if counts is None else _Popular.of(model, counts, windows, batch, valid, since)
    if cfg.negatives == "all":
        extra = None if pop is None else pop.logits(torch.arange(1, len(model.vocab.items) + 1))
        per_row = full_softmax(model, data, queries, t, gen, extra)
        return weighted_mean(per_row, w), int(valid.sum())
    # in-batch negatives: every distinct target of the batch, each once
    cand, label = torch.unique(t, return_inverse=True)
    cv = vecs[torch.searchsorted(uniq, cand).to(dev)]
    bias = -sampling.log_q[cand.to(dev)] if cfg.logq else None
    logits = F.linear(queries / cfg.temperature, cv, bias)
    if pop is not None:
        logits = logits + pop.logits(cand) / cfg.temperature
    per_row = F.cross_entropy(logits, label.to(dev), reduction="none")
    return weighted_mean(per_row, w), int(valid.sum())


@dataclass
class _Popular:
    """A batch's popularity term (`popularity_days`): each query's weight and target time
    bin, its positions' queries first, then (with `prior`) the empty-history ones, bucket 0."""

    counts: TrailingCounts
    weight: torch.Tensor
    bins: torch.Tensor

    @classmethod
    def of(
        cls,
        model: TwoTowerModel,
        counts: TrailingCounts,
        windows: Windows,
        batch: torch.Tensor,
        valid: torch.Tensor,
        since: torch.Tensor,
    ) -> _Popular:
        assert windows.bins is not None
        tower, on = model.user_tower, valid.to(since.device)
        weight, bins = tower.popularity_weight(since, since)[on], windows.bins[batch][valid]
        if model.config.prior:
            weight = torch.cat([weight, tower.popularity_weight(None, weight)])
            bins = bins.repeat(2)
        return cls(counts, weight, bins)

    def logits(self, candidates: torch.Tensor) -> torch.Tensor:
        """(queries, candidates): weight x the candidates' log counts at each query's bin."""
        logs = self.counts.log_counts(candidates.cpu()[None, :], self.bins[:, None])
        return self.weight[:, None] * logs.to(self.weight.device)


@torch.no_grad()
def _validate(
    model: TwoTowerModel,
    data: TrainData,
    sequences: list[tuple[np.ndarray, np.ndarray]],
    seen: pd.DataFrame,
    val: pd.DataFrame,
) -> float:
    model.user_tower.eval()
    model.item_tower.eval()
    iv = model.item_tower(data.all_item_ids, data.all_item_feats)
    table = iv.cpu().numpy()
    if model.config.popularity_days > 0:  # as served: the counts at the end of `seen`
        iv = torch.cat([iv, model.popularity[1:, None].to(iv.device)], dim=1)
    histories = [(table[items - 1], times) for items, times in sequences]
    shape, now = model.config.shape(), last_time(seen)
    uv = encode_histories(
        model.user_tower, histories, data.all_user_feats, shape, model.device, now=now
    )
    return ranked_ndcg(torch.from_numpy(uv).to(model.device) @ iv.T, model.vocab, seen, val)


SEQUENCE = Trainer(_holdout, train_sequences)
