"""What a Qdrant store keeps per filter between its writes: how many points match, how often
the filter was searched, and, for a filter searched again whose matches are few, their
vectors gathered into one matrix, which the store scores exactly itself.

Why: below its `full_scan_threshold` (and where the store asks for exact search) Qdrant
scores a filter's matches one point at a time through the payload index, which for 10% of
100k x 128 costs about five unfiltered graph searches; one contiguous scan of the same
vectors (FAISS's `knn`: SIMD for a query, BLAS for a batch) costs less than one. Gathering
them (a scroll with vectors) costs a few hundred single queries, so it is done only for a
filter searched a second time (serving traffic repeats its filters; a one-off filter never
pays it), and only where the store is the data's sole writer (the in-process edge engine:
a server's other clients could change what was gathered).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from embedrec.stores.qdrant.dialect import point_id

KEPT_FILTERS = 128
"""Filters whose match count a store keeps (until its next write)."""
GATHER_BYTES = 64 << 20
"""Largest copy of one filter's vectors a store gathers."""
GATHERED_KEPT_BYTES = 128 << 20
"""Gathered vectors a store keeps over all its filters; the least recently used go first."""
FEW_QUERIES = 20
"""Below this many queries, each is scanned on the calling thread (FAISS's own threshold
between its one-by-one kernels and BLAS)."""
SCAN_GAIN = 4
"""How many times cheaper a vector is to score in a contiguous scan than along the graph:
gathered matches up to this many times what a graph search scores are scanned instead."""


@dataclass
class Gathered:
    """A filter's matching points: their ids (the engine's) and vectors, row by row."""

    ids: list[Any]
    vectors: np.ndarray
    _rows: dict[Any, int] | None = None

    def rows_of(self, record_ids: Collection[str]) -> set[int]:
        """The rows of these records among the gathered points (the absent left out)."""
        if self._rows is None:  # the edge engine's point ids are UUIDs
            self._rows = {pid: row for row, pid in enumerate(self.ids)}
        rows = (self._rows.get(uuid.UUID(point_id(r))) for r in record_ids)
        return {row for row in rows if row is not None}

    def search(
        self,
        queries: np.ndarray,
        k: int,
        metric: str,
        exclude: Sequence[Collection[str]] | None,
    ) -> list[list[tuple[Any, float]]]:
        """Exact top-k (point id, score) per query, best first, leaving out each row's
        excluded records. Scores are the store's: the inner product (cosine rows are unit
        length), or the negated squared distance for l2."""
        skip = [self.rows_of(ex) for ex in exclude] if exclude else [set()] * len(queries)
        kk = min(k + max(map(len, skip)), len(self.ids))
        if kk == 0:
            return [[] for _ in range(len(queries))]
        scores, rows = self._scan(queries, kk, metric == "l2")
        answers = []
        for row_scores, row_ids, left_out in zip(scores.tolist(), rows.tolist(), skip, strict=True):
            kept = [(r, s) for r, s in zip(row_ids, row_scores, strict=True) if r not in left_out]
            answers.append([(self.ids[r], s) for r, s in kept[:k]])
        return answers

    def _scan(self, queries: np.ndarray, kk: int, l2: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-kk (scores, rows) per query, best first: FAISS's `knn` for a batch (BLAS, on
        FAISS's threads); a few queries each on this thread through FAISS's SIMD kernels,
        since `knn` splits one query over OpenMP threads, whose spin-waits cost a
        hundred times the scan on a busy machine."""
        if len(queries) >= FEW_QUERIES:
            kind = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
            scores, rows = faiss.knn(queries, self.vectors, kk, kind)
            return (-scores if l2 else scores), rows
        n, dim = self.vectors.shape
        kernel = faiss.fvec_L2sqr_ny if l2 else faiss.fvec_inner_products_ny
        out = np.empty(n, dtype=np.float32)
        all_scores, all_rows = [], []
        for q in np.ascontiguousarray(queries, dtype=np.float32):
            kernel(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(self.vectors), dim, n)
            row_scores = -out if l2 else out
            top = np.argpartition(-row_scores, kk - 1)[:kk] if kk < n else np.arange(n)
            top = top[np.argsort(-row_scores[top], kind="stable")]
            all_scores.append(row_scores[top])
            all_rows.append(top)
        return np.stack(all_scores), np.stack(all_rows)


@dataclass
class FilterState:
    matches: int
    searches: int = 0
    gathered: Gathered | None = None


class FilterCache:
    """Per filter (by key), what the store learnt of it since its last write. `clear()` on
    every write; a gather that a write overtook is not kept."""

    def __init__(self) -> None:
        self._states: dict[str, FilterState] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._writes += 1

    def state(self, key: str, count: Callable[[], int]) -> FilterState:
        """The filter's state, counting its matches at its first search since a write; each
        call is one more search of it."""
        with self._lock:
            found = self._states.pop(key, None)
        if found is None:
            found = FilterState(count())
        found.searches += 1
        with self._lock:
            self._states[key] = found  # most recently used last
            while len(self._states) > KEPT_FILTERS:
                self._states.pop(next(iter(self._states)))
        return found

    def gathered(
        self, state: FilterState, dim: int, gather: Callable[[], tuple[list[Any], np.ndarray]]
    ) -> Gathered | None:
        """The filter's gathered vectors, gathered now at its second search, or None where
        they would be larger than GATHER_BYTES."""
        if state.gathered is not None or state.searches < 2:
            return state.gathered
        if state.matches * dim * 4 > GATHER_BYTES:
            return None
        writes = self._writes
        ids, vectors = gather()
        with self._lock:
            if writes != self._writes:
                return Gathered(ids, vectors)  # answers this search; a write made it stale
            state.gathered = Gathered(ids, vectors)
            self._trim()
        return state.gathered

    def _trim(self) -> None:
        """Drop the least recently searched filters' vectors past GATHERED_KEPT_BYTES."""
        holding = [s for s in self._states.values() if s.gathered is not None]
        total = sum(s.gathered.vectors.nbytes for s in holding)  # type: ignore[union-attr]
        for s in holding[:-1]:
            if total <= GATHERED_KEPT_BYTES:
                return
            total -= s.gathered.vectors.nbytes  # type: ignore[union-attr]
            s.gathered = None
