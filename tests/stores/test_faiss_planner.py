"""The FAISS planner's single-query path plans as the batch path does: exact over the
allowed vectors, gathered once per selection, where the filter's matches are few."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec import open_store
from embedrec.stores.base import _unit_rows
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


def _each_row_alone(store, queries, k, exclude, flt=None):  # type: ignore[no-untyped-def]
    """main's exclusion search: each row through a selection of its own (base less the row's
    excluded slots), one `filtered` call per row."""
    table, over = store._table, store._search_over
    base = table.select(store.check_filter(flt) if flt is not None else None)
    rows = []
    for row, ex in zip(queries, exclude, strict=True):
        found = table.find(list(ex))
        slots = found[found >= 0]
        mask = base.mask.copy()
        mask[slots] = False
        selection = planner.Selection(mask)
        rows.append(over.filtered(row[None, :], k, selection, store._uri_params))
    return rows


@pytest.mark.parametrize(
    ("uri", "metric"),
    [
        ("faiss:?index=HNSW16", "cosine"),
        ("faiss:?index=HNSW16", "l2"),
        ("faiss:?index=Flat", "dot"),
        ("faiss:?index=SQ8", "l2"),
        ("faiss:?index=IVF16,Flat", "cosine"),
        ("faiss:?index=IVF16,PQ4", "l2"),
    ],
)
def test_a_batch_leaving_out_ids_answers_as_each_row_alone(uri, metric):
    """A small store, where a row with exclusions plans as an exact scan: the batch shares
    one scan and drops each row's excluded after; the same ids and scores (and metadata) as
    each row searched through a selection of its own, with a filter and dead slots too."""
    rng = np.random.default_rng(5)
    n, dim = 1500, 16
    store = open_store(uri, dim=dim, metric=metric)
    store.upsert(
        [str(i) for i in range(n)], rng.standard_normal((n, dim)), [{"p": i % 3} for i in range(n)]
    )
    store.flush()
    store.delete([str(i) for i in range(0, 60, 7)])  # dead slots: every search is filtered
    queries = rng.standard_normal((9, dim)).astype(np.float32)
    # excluded sets of varied sizes, each with some of its row's nearest records (so that
    # leaving them out changes the answer), some ids the store lacks or deleted, one empty
    near = [h.ids for h in store.search(queries, 2 * K)]
    sizes = (0, 1, 5, 40, 200, 60, 3, 90, 10)
    exclude = [
        frozenset(near[r][: min(size, K)]) | {str(i) for i in rng.choice(n + 50, size)}
        for r, size in enumerate(sizes)
    ]
    for flt in (None, {"p": {"$in": [0, 2]}}):
        batch = store.search(queries, K, filter=flt, exclude=exclude)
        qs = _unit_rows(queries) if metric == "cosine" else queries
        alone = _each_row_alone(store, qs, K, exclude, flt)
        for hits, (distances, labels), ex in zip(batch, alone, exclude, strict=True):
            kept = labels[0] >= 0
            assert hits.ids == store._table.ids.take(labels[0][kept])
            want = -distances[0][kept] if metric == "l2" else distances[0][kept]
            assert hits.scores == want.tolist()
            assert not ex & set(hits.ids) and len(hits) == K
            assert hits.metadata == store._table.columns.rows(labels[0][kept])
