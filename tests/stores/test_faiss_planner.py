"""The FAISS planner's single-query path plans as the batch path does: exact over the
allowed vectors, gathered once per selection, where the filter's matches are few."""

from __future__ import annotations

import numpy as np

from embedrec import open_store
from embedrec.stores.faiss import planner
from tests.stores.recall_conformance import correlated

K = 10


def test_single_queries_answer_a_correlated_filter_as_the_batch_does():
    vectors, label, queries = correlated(20_000, 32, seed=11)
    store = open_store("faiss:?index=HNSW8&ef=16", dim=32, metric="l2")
    store.upsert([str(i) for i in range(len(vectors))], vectors, [{"label": int(v)} for v in label])
    flt = {"label": 3}
    batch = store.search(queries, K, filter=flt)
    single = [store.search(q, K, filter=flt)[0] for q in queries]
    assert [h.ids for h in single] == [h.ids for h in batch]
    assert all(len(h) == K for h in single)


def test_gathered_vectors_are_kept_for_the_last_few_selections():
    rng = np.random.default_rng(0)
    store = open_store("faiss:?index=HNSW8", dim=8, metric="l2")
    store.upsert(
        [str(i) for i in range(4000)],
        rng.standard_normal((4000, 8)),
        [{"part": i % 50} for i in range(4000)],
    )
    over = store._search_over
    query = rng.standard_normal(8)
    store.search(query, K, filter={"part": 1})
    gathered = next(iter(over._gathered.values()))[2]
    store.search(query, K, filter={"part": 1})
    assert next(iter(over._gathered.values()))[2] is gathered  # not gathered again
    for part in range(2, 2 + 2 * planner.GATHERED_KEPT):
        store.search(query, K, filter={"part": part})
    assert len(over._gathered) == planner.GATHERED_KEPT
