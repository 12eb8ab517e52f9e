"""Helpers the benchmark scripts share: timing, exact neighbours, tie-aware recall, data,
and the filtered-search figures of a store."""

from __future__ import annotations

import time
from collections.abc import Callable

import faiss
import numpy as np
from rich.table import Table

from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.stores import Hits, VectorStore

CLOCK: Callable[[], float] = time.perf_counter
"""What `best_of` (and so `paired_ratio`) times with; a script may set `time.process_time`
(CPU seconds of every thread of the process), which a busy machine's preemption does not
inflate."""


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The shortest of `repeat` timed calls, in seconds of `CLOCK`."""
    times = []
    for _ in range(repeat):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
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


def synthetic(n: int, nq: int, d: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered vectors (256 centres, noise 0.5): n base, nq queries, and each base
    vector's cluster (a filter on it is correlated with the query's neighbourhood)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((256, d)).astype(np.float32)
    cluster = rng.integers(0, 256, n + nq)
    data = centers[cluster] + 0.5 * rng.standard_normal((n + nq, d))
    return data[:n].astype(np.float32), data[n:].astype(np.float32), cluster[:n]


Filter = tuple[str, dict, np.ndarray]
"""(label, filter, the base rows it keeps)."""


def bucket_filters(n: int) -> list[Filter]:
    """Random filters over `bucket` = position % 100 at 1%, 10% and 50% selectivity."""
    bucket = np.arange(n) % 100
    return [
        ("1%", {"bucket": 7}, bucket == 7),
        ("10%", {"bucket": {"$lt": 10}}, bucket < 10),
        ("50%", {"bucket": {"$lt": 50}}, bucket < 50),
    ]


Dataset = tuple[np.ndarray, np.ndarray, list[dict], list[Filter]]
"""(base, queries, metadata per base vector, filters)."""


def synthetic_set(n: int, nq: int) -> Dataset:
    """Clustered 128-d vectors; random bucket filters and a correlated one: the vector's
    cluster among the first 26 of 256 (about 10%)."""
    base, queries, cluster = synthetic(n, nq)
    metadata = [{"bucket": i % 100, "cluster": int(c)} for i, c in enumerate(cluster)]
    correlated = ("10% corr.", {"cluster": {"$lt": 26}}, cluster < 26)
    return base, queries, metadata, [*bucket_filters(n), correlated]


def fashion_set() -> Dataset:
    """Fashion-MNIST; random bucket filters and its label (one class of ten, correlated)."""
    base, queries = fashion()
    labels = load_fashion_mnist().train_labels[: len(base)]
    metadata = [{"bucket": i % 100, "label": int(v)} for i, v in enumerate(labels)]
    correlated = ("label=3", {"label": 3}, labels == 3)
    return base, queries, metadata, [*bucket_filters(len(base)), correlated]


def filtered_figures(
    store: VectorStore,
    base: np.ndarray,
    queries: np.ndarray,
    filters: list[Filter],
    repeat: int,
    k: int = 10,
    singles: int = 200,
) -> dict[str, dict]:
    """Per filter: recall@k against exact filtered search for a batch of 1,000 queries and
    for a loop of `singles` single queries, whether every query got k hits, and the time of
    each against the same unfiltered work (paired rounds, medians)."""
    batch, single = queries[:1000], queries[:singles]

    def unfiltered_batch() -> None:
        store.search(batch, k)

    def unfiltered_loop() -> None:
        for q in single:
            store.search(q, k)

    out = {}
    for label, flt, keep in filters:
        hits = store.search(batch, k, filter=flt)
        truth = exact_neighbours(base[keep], batch, k)
        one_by_one = [store.search(q, k, filter=flt)[0] for q in single]

        def filtered_batch(flt: dict = flt) -> None:
            store.search(batch, k, filter=flt)

        def filtered_loop(flt: dict = flt) -> None:
            for q in single:
                store.search(q, k, filter=flt)

        out[label] = {
            "share": float(keep.mean()),
            "recall@10": recall(hits, truth),
            "single_recall@10": recall(one_by_one, truth[: len(single)]),
            "all_k": all(len(h) == k for h in hits + one_by_one),
            "batch_vs_unfiltered": paired_ratio(repeat, unfiltered_batch, filtered_batch)[0],
            "single_vs_unfiltered": paired_ratio(repeat, unfiltered_loop, filtered_loop)[0],
        }
    return out


def filtered_table(title: str, rows: dict[str, dict[str, dict]]) -> Table:
    """`filtered_figures` of several datasets as one table."""
    table = Table(title=title)
    for col in ("dataset", "filter", "share", "recall", "single recall", "k hits"):
        table.add_column(col, justify="right")
    table.add_column("batch x unf.", justify="right")
    table.add_column("single x unf.", justify="right")
    for dataset, figures in rows.items():
        for n, (label, f) in enumerate(figures.items()):
            table.add_row(
                dataset if n == 0 else "",
                label,
                f"{f['share']:.1%}",
                f"{f['recall@10']:.4f}",
                f"{f['single_recall@10']:.4f}",
                "yes" if f["all_k"] else "NO",
                f"{f['batch_vs_unfiltered']:.2f}",
                f"{f['single_vs_unfiltered']:.2f}",
            )
    return table
