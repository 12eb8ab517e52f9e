"""Helpers the benchmark scripts share: timing, exact neighbours, tie-aware recall, data."""

from __future__ import annotations

import time
from collections.abc import Callable

import faiss
import numpy as np

from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.stores import Hits


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The shortest of `repeat` timed calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def paired_ratio(
    repeat: int, baseline: Callable[[], object], candidate: Callable[[], object]
) -> tuple[float, float, float]:
    """candidate / baseline time on a shared machine: each round times both back to back,
    in alternating order, so that a change in load hits both sides of one ratio. Returns the
    median of the per-round ratios and the best time of each side, in seconds."""
    ratios, base_s, cand_s = [], [], []
    for r in range(repeat):
        if r % 2:
            c, b = best_of(1, candidate), best_of(1, baseline)
        else:
            b, c = best_of(1, baseline), best_of(1, candidate)
        ratios.append(c / b)
        base_s.append(b)
        cand_s.append(c)
    return float(np.median(ratios)), min(base_s), min(cand_s)


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Squared L2 distances of the exact k nearest neighbours, (nq, k)."""
    distances, _ = faiss.knn(queries, base, k, faiss.METRIC_L2)
    return distances


def recall(hits: list[Hits], true_distances: np.ndarray) -> float:
    """Distance-tie-aware recall@k, as ann-benchmarks computes it: a hit (an l2 store's
    score is the negated squared distance) counts when it is no farther than the k-th true
    neighbour."""
    found = 0
    for row, truth in zip(hits, true_distances, strict=True):
        threshold = truth[-1] * (1 + 1e-4) + 1e-6
        found += sum(1 for score in row.scores if -score <= threshold)
    return found / true_distances.size


def fashion(n: int | None = None, nq: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-784 as float32 pixels: the first n train images, the first nq test ones."""
    fm = load_fashion_mnist()
    base = fm.train_images.reshape(len(fm.train_images), -1)[:n].astype(np.float32)
    queries = fm.test_images.reshape(len(fm.test_images), -1)[:nq].astype(np.float32)
    return base, queries
