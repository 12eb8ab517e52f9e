"""Filtered recall for every ANN store: a mixin for a `StoreConformance` test class.

    class TestFaissHNSW(RecallConformance, StoreConformance): ...

The case is the one that fooled a filter-blind graph: clustered vectors whose filter field
follows the clusters (about 10% of the records match, and they sit together), so a graph
walk from the query's neighbourhood finds few matches unless the store plans the filtered
search (filter-aware links, a raised ef, or exact scoring of the matches). The filter field
is declared before the first write in one run and left to the store in the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from embedrec import open_store
from tests.stores.conformance import brute_force

K = 10


def correlated(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, label per vector, queries): 40 clusters, label = cluster % 10, queries
    drawn near the records."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim)).astype(np.float32)
    cluster = rng.integers(0, 40, n)
    vectors = centers[cluster] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    picked = rng.choice(n, 50, replace=False)
    queries = vectors[picked] + 0.3 * rng.standard_normal((50, dim)).astype(np.float32)
    return vectors, cluster % 10, queries


class RecallConformance:
    recall_n: ClassVar[int] = 3000
    recall_dim: ClassVar[int] = 32
    recall_options: ClassVar[dict[str, Any]] = {}
    """Extra open options for this case (for example, to build a graph over few vectors)."""
    recall_params: ClassVar[dict[str, Any]] = {}
    """Search params for this case: a low effort makes a filter-blind search miss."""

    @pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
    def test_correlated_filter_recall(self, tmp_path: Path, declared: bool) -> None:
        vectors, label, queries = correlated(self.recall_n, self.recall_dim, seed=11)
        options = {**self.options, **self.recall_options}  # type: ignore[attr-defined]
        uri = self.uri(tmp_path / "recall")  # type: ignore[attr-defined]
        with open_store(uri, dim=self.recall_dim, metric="l2", **options) as store:
            if declared:
                store.declare_fields({"label": "int"})
            ids = [f"v{i}" for i in range(len(vectors))]
            store.upsert(ids, vectors, [{"label": int(v)} for v in label])
            store.flush()
            hits = store.search(queries, K, filter={"label": 3}, params=self.recall_params)
        keep = np.flatnonzero(label == 3)
        assert 0.05 < len(keep) / len(vectors) < 0.15
        truth = np.sort(brute_force(vectors[keep], queries, "l2"), axis=1)[:, ::-1][:, :K]
        assert [len(h) for h in hits] == [K] * len(queries)
        assert all(int(m["label"]) == 3 for h in hits for m in h.metadata)
        # distance-tie-aware: a hit counts when it is no farther than the k-th true neighbour
        found = sum(
            sum(1 for s in h.scores if s >= t[-1] - 1e-3 * abs(t[-1]))
            for h, t in zip(hits, truth, strict=True)
        )
        assert found / truth.size >= 0.95
