"""Ranking metrics as pure, vectorised functions over top-k lists.

Conventions, as in Microsoft Recommenders' `recommenders/evaluation/python_evaluation.py`
(precision_at_k, recall_at_k, ndcg_at_k, map, map_at_k) with `relevancy_method="top_k"`
and binary relevance:

- `topk` is an int array (n_users, k) of item indices, best first; -1 pads a list shorter
  than k (it never counts as a hit).
- `hits` is the bool array (n_users, k) saying which of those items are relevant: build it
  with `hit_matrix`.
- `n_relevant` is the int array (n_users,) of relevant (test) items per user, each >= 1.
- Every metric is the mean over the users given, so evaluate exactly the users that have
  test items (Recommenders averages over the users common to truth and prediction).
"""

from __future__ import annotations

import numpy as np


def _check(hits: np.ndarray, n_relevant: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2 or hits.shape[0] == 0:
        raise ValueError(f"hits must be a non-empty (n_users, k) array, got shape {hits.shape}")
    if n_relevant is None:
        return (hits,)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(
            f"n_relevant has shape {n_relevant.shape}, expected ({hits.shape[0]},) for the hits"
        )
    if (n_relevant < 1).any():
        user = int(np.flatnonzero(n_relevant < 1)[0])
        raise ValueError(f"user at row {user} has no relevant items; leave such users out")
    if (hits.sum(axis=1) > n_relevant).any():
        user = int(np.flatnonzero(hits.sum(axis=1) > n_relevant)[0])
        raise ValueError(f"user at row {user} has more hits than relevant items")
    return hits, n_relevant


def hit_matrix(
    topk: np.ndarray, truth_users: np.ndarray, truth_items: np.ndarray, n_items: int
) -> np.ndarray:
    """hits[u, r] = True when item topk[u, r] is among user u's relevant items, where the
    relevant pairs are (truth_users[j], truth_items[j]) with users numbered by row of topk."""
    topk = np.asarray(topk, dtype=np.int64)
    keys = np.unique(np.asarray(truth_users, np.int64) * n_items + np.asarray(truth_items))
    rows = np.arange(topk.shape[0], dtype=np.int64)[:, None]
    return np.isin(rows * n_items + topk, keys) & (topk >= 0)


def precision_at_k(hits: np.ndarray, k: int) -> float:
    """Precision@k = mean over users of |top-k ∩ relevant| / k.

    The divisor is k even where fewer than k items were recommended (Spark's and
    Recommenders' `precision_at_k`)."""
    (hits,) = _check(hits)
    return float((hits[:, :k].sum(axis=1) / k).mean())


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Recall@k = mean over users of |top-k ∩ relevant| / |relevant| (Recommenders'
    `recall_at_k`; it can reach 1 only when |relevant| <= k)."""
    hits, n_relevant = _check(hits, n_relevant)
    return float((hits[:, :k].sum(axis=1) / n_relevant).mean())


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """NDCG@k with binary relevance = mean over users of DCG / IDCG, where
    DCG = sum over hit ranks r (1-based, r <= k) of 1 / log(1 + r) and
    IDCG = sum_{r=1}^{min(|relevant|, k)} 1 / log(1 + r)
    (Recommenders' `ndcg_at_k(score_type="binary")`; the log base cancels)."""
    hits, n_relevant = _check(hits, n_relevant)
    hits = hits[:, :k]
    discount = 1.0 / np.log1p(np.arange(1, hits.shape[1] + 1))
    dcg = (hits * discount).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log1p(np.arange(1, k + 1)))])
    idcg = ideal[np.minimum(n_relevant, k)]
    return float((dcg / idcg).mean())


def _precision_at_hits(hits: np.ndarray) -> np.ndarray:
    """Sum over hit ranks r of (hits within the first r) / r, per user."""
    ranks = np.arange(1, hits.shape[1] + 1)
    return (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1)


def map_score(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """MAP as Recommenders defines `map`: mean over users of
    (sum over hit ranks r <= k of precision@r) / |relevant|.
    Normalised by all relevant items, not by min(|relevant|, k) (see `map_at_k`)."""
    hits, n_relevant = _check(hits, n_relevant)
    return float((_precision_at_hits(hits[:, :k]) / n_relevant).mean())


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """MAP@k as Recommenders' `map_at_k` (Spark's meanAveragePrecisionAt): mean over users of
    (sum over hit ranks r <= k of precision@r) / min(|relevant|, k)."""
    hits, n_relevant = _check(hits, n_relevant)
    return float((_precision_at_hits(hits[:, :k]) / np.minimum(n_relevant, k)).mean())


def hit_rate_at_k(hits: np.ndarray, k: int) -> float:
    """Hit rate@k = share of users with at least one relevant item in their top k."""
    (hits,) = _check(hits)
    return float(hits[:, :k].any(axis=1).mean())


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Catalog coverage = distinct items recommended across all top-k lists / catalogue size
    (Ge, Delgado-Battenfeld & Jannach, RecSys 2010; Recommenders' `catalog_coverage` with the
    catalogue taken as the candidate items)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    topk = np.asarray(topk)
    return float(np.unique(topk[topk >= 0]).size / n_items)


def ranking_metrics(
    topk: np.ndarray, hits: np.ndarray, n_relevant: np.ndarray, k: int, n_items: int
) -> dict[str, float]:
    """Every metric above at cut-off k, keyed as in the leaderboard."""
    return {
        f"ndcg@{k}": ndcg_at_k(hits, n_relevant, k),
        "map": map_score(hits, n_relevant, k),
        f"map@{k}": map_at_k(hits, n_relevant, k),
        f"precision@{k}": precision_at_k(hits, k),
        f"recall@{k}": recall_at_k(hits, n_relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(hits, k),
        "coverage": catalog_coverage(topk[:, :k], n_items),
    }


def top_k(scores: np.ndarray, seen: np.ndarray | None, k: int) -> np.ndarray:
    """Indices of the k best-scoring unseen items per row, best first; -1 where fewer than k
    items have a finite score. Ties go to the lower index (a stable order)."""
    scores = scores.astype(np.float64, copy=True)
    if seen is not None:
        scores[seen] = -np.inf
    k_eff = min(k, scores.shape[1])
    # a full stable sort: argpartition would cut ties at the k-th place arbitrarily
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k_eff]
    best[~np.isfinite(np.take_along_axis(scores, best, axis=1))] = -1
    if k_eff < k:
        best = np.pad(best, ((0, 0), (0, k - k_eff)), constant_values=-1)
    return best
