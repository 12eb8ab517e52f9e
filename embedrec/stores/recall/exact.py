"""ANN benchmark metrics: exact ground truth, recall against it, latency percentiles, QPS.

Distances follow ann-benchmarks (`ann_benchmarks/distance.py`): euclidean is the plain
(not squared) L2 distance, angular is 1 - cosine similarity; for the inner product ("dot"),
which ann-benchmarks has no metric for, the distance is the negated inner product. Every
distance here is computed in float64 from the vectors, for the true neighbours and for the
ones a store returned alike, so a store's own score rounding never moves a hit across the
recall threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

KNN_EPSILON = 1e-3
"""ann-benchmarks' `knn_threshold` epsilon (`ann_benchmarks/plotting/metrics.py`)."""
CHUNK = 1024


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def distances(metric: str, queries: np.ndarray, base: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Distance from query i to `base[rows[i, j]]`, (nq, k) float64; `rows` of -1 (a missing
    hit) give +inf."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(rows.shape, np.inf)
    for start in range(0, len(rows), CHUNK):
        r = rows[start : start + CHUNK]
        q = np.asarray(queries[start : start + CHUNK], dtype=np.float64)[:, None, :]
        v = np.asarray(base[np.clip(r, 0, None)], dtype=np.float64)
        if metric == "l2":
            d = np.sqrt(((v - q) ** 2).sum(-1))
        elif metric == "cosine":
            d = 1.0 - (_unit(v) * _unit(q)).sum(-1)
        elif metric == "dot":
            d = -(v * q).sum(-1)
        else:
            raise ValueError(f"unknown metric {metric!r}; known: l2, cosine, dot")
        out[start : start + CHUNK] = np.where(r >= 0, d, np.inf)
    return out


def exact_knn(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest rows of `base` for each query: (distances (nq, k) float64 in the
    ann-benchmarks sense, ascending; row indices (nq, k) int64)."""
    if k > len(base):
        raise ValueError(f"k={k} exceeds the {len(base)} base vectors")
    b = np.ascontiguousarray(base, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "l2":
        _, rows = faiss.knn(q, b, k, faiss.METRIC_L2)
    elif metric in ("cosine", "dot"):
        if metric == "cosine":
            b, q = _unit(b).astype(np.float32), _unit(q).astype(np.float32)
        _, rows = faiss.knn(q, b, k, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown metric {metric!r}; known: l2, cosine, dot")
    dist = distances(metric, queries, base, rows)
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), np.take_along_axis(rows, order, 1)


def recall_by_id(true_rows: np.ndarray, found_rows: np.ndarray) -> np.ndarray:
    """Per query: the share of the k true neighbour ids among the first k found (-1 = none).
    A found id tied in distance with the k-th true neighbour but not listed counts as a miss."""
    k = true_rows.shape[1]
    hits = [
        len(set(t.tolist()) & set(f[:k].tolist()))
        for t, f in zip(true_rows, found_rows, strict=True)
    ]
    return np.asarray(hits, dtype=np.float64) / k


def recall_tie_aware(
    true_distances: np.ndarray, found_distances: np.ndarray, epsilon: float = KNN_EPSILON
) -> np.ndarray:
    """Per query, as ann-benchmarks' `get_recall_values` with `knn_threshold`: the share of
    the first k found hits whose distance is at most the k-th true distance + epsilon, so
    that any of several equidistant k-th neighbours counts. Missing hits are +inf."""
    k = true_distances.shape[1]
    threshold = true_distances[:, k - 1 : k] + epsilon
    return (found_distances[:, :k] <= threshold).sum(axis=1) / k


def latency_percentiles(
    seconds: Sequence[float] | np.ndarray, percentiles: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Latency percentiles in milliseconds, keyed `p50`...: linear interpolation between the
    order statistics (numpy's default, Hyndman & Fan type 7)."""
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    if values.size == 0:
        raise ValueError("no latencies to summarise")
    return {f"p{p:g}": float(np.percentile(values, p)) for p in percentiles}


def qps(n_queries: int, seconds: float) -> float:
    """Queries per second; a zero or negative duration (a clock too coarse) raises."""
    if seconds <= 0:
        raise ValueError(f"cannot compute QPS over {seconds} s")
    return n_queries / seconds


def pca_reduce(
    base: np.ndarray, queries: np.ndarray, dim: int, train: int = 50_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Project base and queries onto the top `dim` principal axes of (a sample of) base.
    Plain PCA, no whitening: projected L2 distances approximate the original ones."""
    if not 0 < dim <= base.shape[1]:
        raise ValueError(f"PCA dim must be in 1..{base.shape[1]}, got {dim}")
    b = np.ascontiguousarray(base, dtype=np.float32)
    sample = b
    if len(b) > train:
        sample = b[np.sort(np.random.default_rng(seed).choice(len(b), train, replace=False))]
    pca = faiss.PCAMatrix(b.shape[1], dim)
    pca.train(np.ascontiguousarray(sample))
    return pca.apply(b), pca.apply(np.ascontiguousarray(queries, dtype=np.float32))
