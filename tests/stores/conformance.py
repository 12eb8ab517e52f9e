"""The store conformance suite: one set of tests that every VectorStore must pass.

A backend's test module subclasses `StoreConformance` (this class is not collected itself)::

    class TestQdrantMemory(StoreConformance):
        def uri(self, location):
            return f"qdrant+memory:{location.name}"

Each test creates stores with `open_store(self.uri(location), dim=..., metric=...)` at a fresh
location and, for persistent stores, reopens them with `open_store(self.uri(location))`.
`options` are extra keyword options for `open_store`; override `open_store` for more.
The reference evaluator `matches` is the oracle for every filter.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec import (
    DimensionError,
    FilterError,
    IdError,
    MetadataError,
    StoreError,
    VectorError,
    VectorStore,
    matches,
    open_store,
)
from embedrec.stores import ConfigError
from embedrec.stores.filters import fields_of, parse_filter
from tests.stores.hardening import StoreHardening
from tests.stores.info_conformance import StoreInfoConformance

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
TAGS = ["new", "sale", "eco", "gift"]


def brute_force(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """Scores under the store convention: inner product (cosine on normalised rows) or
    the negated squared L2 distance."""
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "l2":
        return -((queries**2).sum(1)[:, None] - 2 * queries @ base.T + (base**2).sum(1)[None, :])
    return queries @ base.T


def random_metadata(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Metadata with every value type, list fields, absent keys and mixed types per key."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"genre": GENRES[int(rng.integers(len(GENRES)))]}
        if rng.random() < 0.8:
            row["year"] = int(rng.integers(1980, 2020))
        if rng.random() < 0.7:
            row["price"] = round(float(rng.uniform(1, 100)), 2)
        if rng.random() < 0.6:
            k = int(rng.integers(0, 3))
            row["tags"] = sorted(rng.choice(TAGS, size=k, replace=False).tolist())
        if rng.random() < 0.5:
            row["in_stock"] = bool(rng.random() < 0.5)
        if i % 7 == 0:
            row["code"] = int(rng.integers(0, 3))  # a number here, a string below
        elif i % 7 == 1:
            row["code"] = str(int(rng.integers(0, 3)))
        rows.append(row)
    return rows


scalars = st.one_of(
    st.sampled_from(GENRES + TAGS + ["0", "1", "2", "none"]),
    st.integers(1975, 2025),
    st.integers(0, 3),
    st.floats(0, 110, allow_nan=False).map(lambda v: round(v, 1)),
    st.booleans(),
)
fields = st.sampled_from(["genre", "year", "price", "tags", "in_stock", "code", "absent"])
numbers = st.one_of(st.integers(0, 2025), st.floats(0, 110, allow_nan=False))
conditions = st.one_of(
    st.builds(lambda f, v: {f: v}, fields, scalars),
    st.builds(lambda f, o, v: {f: {o: v}}, fields, st.sampled_from(["$eq", "$ne"]), scalars),
    st.builds(
        lambda f, o, v: {f: {o: v}},
        fields,
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        numbers,
    ),
    st.builds(
        lambda f, o, v: {f: {o: v}},
        fields,
        st.sampled_from(["$in", "$nin"]),
        st.lists(scalars, min_size=1, max_size=3),
    ),
    st.builds(lambda f, v: {f: {"$exists": v}}, fields, st.booleans()),
)
filters = st.recursive(
    conditions,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=5,
)


class StoreConformance(StoreInfoConformance, StoreHardening):
    options: ClassVar[dict[str, Any]] = {}
    filter_examples = 60

    def uri(self, location: Path) -> str:
        raise NotImplementedError

    def open_store(
        self, location: Path, dim: int | None = None, metric: str | None = None
    ) -> VectorStore:
        return open_store(self.uri(location), dim=dim, metric=metric, **self.options)

    @pytest.fixture
    def make(self, tmp_path: Path):
        """Create stores at fresh locations; closes them after the test."""
        opened: list[VectorStore] = []
        counter = itertools.count()

        def make(dim: int = 8, metric: str = "cosine") -> VectorStore:
            location = tmp_path / f"store{next(counter)}"
            store = self.open_store(location, dim=dim, metric=metric)
            store.location = location  # type: ignore[attr-defined]
            opened.append(store)
            return store

        yield make
        for store in opened:
            with contextlib.suppress(StoreError):
                store.close()

    def reopen(self, store: VectorStore) -> VectorStore:
        if not store.capabilities.persistent:
            pytest.skip(f"{type(store).__name__} at {store.uri} is not persistent")
        store.close()
        return self.open_store(store.location)  # type: ignore[attr-defined]

    @pytest.fixture
    def loaded(self, make):
        """A store with 200 records of random metadata, flushed."""
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((200, 8)).astype(np.float32)
        metadata = random_metadata(rng, 200)
        ids = [f"r{i}" for i in range(200)]
        store = make(dim=8, metric="cosine")
        store.upsert(ids, vectors, metadata)
        store.flush()
        return store, ids, vectors, metadata

    # -- basics ---------------------------------------------------------------------------

    def test_empty_store(self, make):
        store = make()
        assert store.count() == 0
        assert store.count({"genre": "Drama"}) == 0
        assert store.fetch(["nope"]) == []
        assert store.search(np.ones((2, 8)), 5) == [[], []]

    def test_upsert_fetch_round_trip(self, make):
        rng = np.random.default_rng(1)
        vectors = rng.standard_normal((20, 8)).astype(np.float32)
        metadata = random_metadata(rng, 20)
        store = make(metric="dot")
        assert store.upsert([f"x{i}" for i in range(20)], vectors, metadata) == 20
        store.flush()
        assert store.count() == 20
        got = store.fetch(["x3", "missing", "x0", "x19"])
        assert [r.id for r in got] == ["x3", "x0", "x19"]
        for record, i in zip(got, [3, 0, 19], strict=True):
            np.testing.assert_allclose(record.vector, vectors[i], rtol=1e-5, atol=2e-2)
            if store.capabilities.exact_vectors:
                np.testing.assert_allclose(record.vector, vectors[i], rtol=1e-5, atol=1e-5)
            assert record.vector.dtype == np.float32
            assert record.metadata == metadata[i]

    def test_fetch_vectors_is_fetch_without_metadata(self, make):
        rng = np.random.default_rng(2)
        store = make(metric="dot")
        assert store.fetch_vectors(["nope"])[0] == []
        assert store.fetch_vectors([])[1].shape == (0, 8)
        ids = [f"x{i}" for i in range(20)]
        store.upsert(ids, rng.standard_normal((20, 8)).astype(np.float32), random_metadata(rng, 20))
        store.delete(["x5"])
        store.flush()
        asked = ["x3", "missing", "x0", "x5", "x19"]
        found, matrix = store.fetch_vectors(asked)
        records = store.fetch(asked)
        assert found == [r.id for r in records] == ["x3", "x0", "x19"]
        assert matrix.dtype == np.float32 and matrix.shape == (3, 8)
        np.testing.assert_array_equal(matrix, np.stack([r.vector for r in records]))
        assert store.fetch_vectors(["missing", "x5"])[1].shape == (0, 8)

    def test_cosine_vectors_are_normalised(self, make):
        store = make(metric="cosine")
        store.upsert(["a"], [[3.0, 4.0, 0, 0, 0, 0, 0, 0]])
        store.flush()
        np.testing.assert_allclose(store.fetch(["a"])[0].vector[:2], [0.6, 0.8], atol=1e-2)

    def test_overwrite(self, make):
        store = make(metric="l2")
        store.upsert(["a", "b"], np.eye(8)[:2], [{"v": 1}, {"v": 1}])
        store.upsert(["a"], np.eye(8)[5:6] * 2, [{"v": 2}])
        store.flush()
        assert store.count() == 2
        (record,) = store.fetch(["a"])
        np.testing.assert_allclose(record.vector, np.eye(8)[5] * 2, atol=1e-2)
        assert record.metadata == {"v": 2}
        hits = store.search(np.eye(8)[5] * 2, 2)[0]
        assert hits[0].id == "a" and hits[0].score == pytest.approx(0.0, abs=1e-2)
        assert [h.id for h in store.search(np.eye(8)[0], 2)[0]] == ["b", "a"]
        assert store.count({"v": 2}) == 1

    def test_delete_by_ids(self, loaded):
        store, _, vectors, _ = loaded
        assert store.delete(["r0", "r1", "never-was"]) == 2
        store.flush()
        assert store.count() == 198
        assert store.fetch(["r0", "r1", "r2"])[0].id == "r2"
        found = {h.id for h in store.search(vectors[0], 200)[0]}
        assert "r0" not in found and "r1" not in found and len(found) == 198
        assert store.delete(["r0"]) == 0

    def test_delete_by_filter(self, loaded):
        store, _, vectors, metadata = loaded
        flt = {"genre": {"$in": ["Drama", "Horror"]}}
        expected = sum(matches(m, flt) for m in metadata)
        assert store.delete(filter=flt) == expected
        store.flush()
        assert store.count() == 200 - expected
        assert store.count(flt) == 0
        assert all(not matches(h.metadata, flt) for h in store.search(vectors[0], 200)[0])

    def test_delete_needs_ids_or_filter(self, make):
        with pytest.raises(StoreError):
            make().delete()

    def test_count_with_filter(self, loaded):
        store, _, _, metadata = loaded
        for flt in ({"year": {"$gte": 2000}}, {"tags": "sale"}, {"in_stock": False}, {}):
            assert store.count(flt) == sum(matches(m, flt) for m in metadata)

    # -- search ---------------------------------------------------------------------------

    @pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
    def test_top_k_matches_brute_force(self, make, metric):
        rng = np.random.default_rng(3)
        base = rng.standard_normal((300, 16)).astype(np.float32)
        queries = rng.standard_normal((5, 16)).astype(np.float32)
        store = make(dim=16, metric=metric)
        store.upsert([str(i) for i in range(300)], base)
        store.flush()
        truth = brute_force(base, queries, metric)
        results = store.search(queries, 10)
        assert len(results) == 5
        recalls = []
        for q, hits in enumerate(results):
            assert len(hits) == 10
            best = np.argsort(-truth[q])[:10]
            got = [int(h.id) for h in hits]
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            # quantised stores (SQ8) score approximately
            rtol, atol = (1e-3, 0.05) if store.capabilities.exact_vectors else (0.02, 0.2)
            np.testing.assert_allclose(scores, truth[q, got], rtol=rtol, atol=atol)
            recalls.append(len(set(got) & set(best.tolist())) / 10)
            if store.capabilities.exact:
                assert got == best.tolist()
        assert np.mean(recalls) >= 0.9

    def test_exclude_leaves_ids_out_and_still_returns_k(self, make):
        rng = np.random.default_rng(5)
        base = rng.standard_normal((120, 16)).astype(np.float32)
        queries = rng.standard_normal((3, 16)).astype(np.float32)
        store = make(dim=16, metric="dot")
        store.upsert(
            [f"e{i}" for i in range(120)], base, [{"even": i % 2 == 0} for i in range(120)]
        )
        store.flush()
        truth = brute_force(base, queries, "dot")
        ranked = [np.argsort(-truth[q]).tolist() for q in range(3)]
        exclude = [
            frozenset(f"e{i}" for i in ranked[0][:30]) | {"never-was"},
            set(),
            [f"e{i}" for i in ranked[2][:7]],
        ]
        for flt, keep in ((None, lambda i: True), ({"even": True}, lambda i: i % 2 == 0)):
            results = store.search(queries, 5, filter=flt, exclude=exclude)
            for q, hits in enumerate(results):
                left = [i for i in ranked[q] if keep(i) and f"e{i}" not in exclude[q]]
                got = [h.id for h in hits]
                assert len(got) == 5 and not set(got) & set(exclude[q])
                assert all(keep(int(h.id[1:])) for h in hits)
                if store.capabilities.exact:
                    assert got == [f"e{i}" for i in left[:5]]
        everything = [frozenset(f"e{i}" for i in range(120))]
        assert store.search(queries[0], 5, exclude=everything) == [[]]
        with pytest.raises(StoreError, match="exclude has 1 rows for 3 queries"):
            store.search(queries, 5, exclude=[set()])

    def test_single_query_vector(self, loaded):
        store, _, vectors, _ = loaded
        hits = store.search(vectors[4], 1)
        assert len(hits) == 1 and hits[0][0].id == "r4"
        assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)

    def test_k_larger_than_count(self, make):
        store = make()
        store.upsert(["a", "b", "c"], np.eye(8)[:3])
        store.flush()
        hits = store.search(np.eye(8)[0], 50)[0]
        assert sorted(h.id for h in hits) == ["a", "b", "c"]

    def test_hits_carry_metadata(self, loaded):
        store, ids, vectors, metadata = loaded
        for hit in store.search(vectors[:3], 5)[1]:
            assert hit.metadata == metadata[ids.index(hit.id)]

    def test_changing_results_leaves_the_store_alone(self, loaded):
        """Hits may share the store's metadata (FAISS does, read-only) or copy it: either
        way, what a caller does to a result never reaches the store."""
        store, ids, vectors, metadata = loaded
        hit = store.search(vectors[0], 1)[0][0]
        expected = metadata[ids.index(hit.id)]
        with contextlib.suppress(TypeError):
            hit.metadata["genre"] = "changed"
        with contextlib.suppress(TypeError):
            hit.metadata.clear()
        record = store.fetch([hit.id])[0]
        record.metadata["genre"] = "changed"
        assert store.search(vectors[0], 1)[0][0].metadata == expected
        assert store.fetch([hit.id])[0].metadata == expected
        mutable = dict(hit.metadata)
        mutable["genre"] = "changed"
        assert mutable["genre"] == "changed"

    def test_search_params_are_checked(self, loaded):
        store = loaded[0]
        with pytest.raises(ConfigError):
            store.search(np.ones(8), 3, params={"no_such_param": 1})
        for name in store.capabilities.search_params:
            value = True if name == "exact" else 32
            assert len(store.search(np.ones(8), 3, params={name: value})[0]) == 3

    # -- filters --------------------------------------------------------------------------

    def test_filters_agree_with_reference(self, loaded):
        store, ids, vectors, metadata = loaded
        known = store.fields()

        @settings(
            max_examples=self.filter_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(flt=filters)
        def check(flt):
            if known is not None and fields_of(parse_filter(flt)) - known:
                with pytest.raises(FilterError, match="is not a field of"):
                    store.search(vectors[11], 200, filter=flt)
                return
            expected = {i for i, m in zip(ids, metadata, strict=True) if matches(m, flt)}
            assert store.count(flt) == len(expected), flt
            hits = store.search(vectors[11], 200, filter=flt)[0]
            assert {h.id for h in hits} == expected, flt

        check()

    def test_filtered_top_k_is_exact_k(self, loaded):
        store, ids, vectors, metadata = loaded
        flt = {"genre": "Comedy", "year": {"$lt": 2005}}
        matching = [i for i, m in enumerate(metadata) if matches(m, flt)]
        assert len(matching) >= 10
        truth = brute_force(vectors[matching], vectors[:3], "cosine")
        for q, hits in enumerate(store.search(vectors[:3], 10, filter=flt)):
            assert len(hits) == 10
            best = {ids[matching[j]] for j in np.argsort(-truth[q])[:10]}
            assert len({h.id for h in hits} & best) >= 9

    def test_list_fields(self, make):
        store = make()
        rows = [{"tags": ["a", "b"]}, {"tags": ["b"]}, {"tags": []}, {}, {"tags": ["c"]}]
        store.upsert([f"t{i}" for i in range(5)], np.eye(8)[:5], rows)
        store.flush()

        def ids(flt):
            return sorted(h.id for h in store.search(np.ones(8), 10, filter=flt)[0])

        assert ids({"tags": "b"}) == ["t0", "t1"]
        assert ids({"tags": {"$in": ["a", "c"]}}) == ["t0", "t4"]
        assert ids({"tags": {"$ne": "b"}}) == ["t2", "t3", "t4"]
        assert ids({"tags": {"$nin": ["a", "b"]}}) == ["t2", "t3", "t4"]

    def test_absent_fields(self, make):
        store = make()
        rows = [{"year": 1999}, {"year": 2001}, {}, {"year": "1999"}]
        store.upsert(["a", "b", "c", "d"], np.eye(8)[:4], rows)
        store.flush()

        def ids(flt):
            return sorted(h.id for h in store.search(np.ones(8), 10, filter=flt)[0])

        assert ids({"year": {"$ne": 1999}}) == ["b", "c", "d"]
        assert ids({"year": {"$nin": [1999, 2001]}}) == ["c", "d"]
        assert ids({"year": {"$exists": False}}) == ["c"]
        assert ids({"year": {"$gte": 1999}}) == ["a", "b"]
        assert ids({"year": 1999.0}) == ["a"]
        assert ids({"year": "1999"}) == ["d"]

    def test_unknown_filter_field(self, loaded):
        """A store that knows its fields names a misspelt one and its fields; one that cannot
        know them (Qdrant, Pinecone) answers as the reference does: no record has it."""
        store = loaded[0]
        flt = {"yeer": {"$gte": 1990}}
        if store.fields() is None:
            assert store.search(np.ones(8), 3, filter=flt) == [[]]
            return
        assert {"genre", "year", "tags"} <= store.fields()
        for call in (lambda: store.search(np.ones(8), 3, filter=flt), lambda: store.count(flt)):
            with pytest.raises(FilterError, match=r"'yeer' is not a field of .*genre, .*year"):
                call()

    def test_bad_filters_raise(self, loaded):
        store = loaded[0]
        for flt in ({"year": {"$regex": "x"}}, {"genre": {"$gt": "Drama"}}, {"$not": {}}):
            with pytest.raises(FilterError):
                store.search(np.ones(8), 3, filter=flt)
            with pytest.raises(FilterError):
                store.count(flt)

    # -- ids ------------------------------------------------------------------------------

    def test_ids_of_every_kind(self, make):
        weird = ["café ☕", "x" * 500, "007", "7", "a b/c?d=e&f", "-1", "1e3", "ünï-cödé-名前"]
        store = make()
        rng = np.random.default_rng(5)
        vectors = rng.standard_normal((len(weird) + 1, 8)).astype(np.float32)
        store.upsert([*weird, 42], vectors)
        store.flush()
        assert store.count() == len(weird) + 1
        got = store.fetch([*weird, "42"])
        assert [r.id for r in got] == [*weird, "42"]
        for i, name in enumerate([*weird, "42"]):
            assert store.search(vectors[i], 1)[0][0].id == name
        assert store.delete(["007", 42]) == 2
        assert store.fetch(["7"])[0].id == "7"

    # -- persistence ----------------------------------------------------------------------

    def test_reopen_after_close(self, loaded):
        store, _, vectors, metadata = loaded
        store.delete(["r5"])
        before = store.search(vectors[:4], 10, filter={"year": {"$gt": 1990}})
        reopened = self.reopen(store)
        try:
            assert reopened.count() == 199
            assert reopened.dim == 8 and reopened.metric == "cosine"
            after = reopened.search(vectors[:4], 10, filter={"year": {"$gt": 1990}})
            assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
            for b, a in zip(before, after, strict=True):
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
            assert reopened.fetch(["r7"])[0].metadata == metadata[7]
            assert reopened.fetch(["r5"]) == []
        finally:
            reopened.close()

    def test_reopen_with_contradicting_dim_or_metric(self, loaded):
        store = loaded[0]
        if not store.capabilities.persistent:
            pytest.skip(f"{type(store).__name__} is not persistent")
        store.close()
        with pytest.raises(DimensionError):
            self.open_store(store.location, dim=9)
        with pytest.raises(ConfigError):
            self.open_store(store.location, metric="l2")

    # -- bad input leaves the store untouched ----------------------------------------------

    @pytest.mark.parametrize(
        "ids, vectors, metadata, error",
        [
            (["a", "b"], np.ones((2, 7)), None, DimensionError),
            (["a", "b"], [[1.0] * 8, [math.nan] * 8], None, VectorError),
            (["a", "b"], [[1.0] * 8, [math.inf] + [0.0] * 7], None, VectorError),
            (["a", "a"], np.ones((2, 8)), None, IdError),
            (["a", ""], np.ones((2, 8)), None, IdError),
            (["a", "b"], np.ones((2, 8)), [{"x": 1}, {"x": None}], MetadataError),
            (["a", "b"], np.ones((2, 8)), [{"x": {"y": 1}}, {}], MetadataError),
            (["a", "b"], np.ones((2, 8)), [{"x": [1, 2]}, {}], MetadataError),
            (["a", "b"], np.ones((2, 8)), [{"x": 2**53 + 1}, {}], MetadataError),
            (["a", "b"], np.ones((2, 8)), [{}], MetadataError),
            (["a", "b"], np.ones((3, 8)), None, IdError),
        ],
    )
    def test_bad_input(self, make, ids, vectors, metadata, error):
        store = make()
        store.upsert(["keep"], np.ones((1, 8)), [{"x": 1}])
        with pytest.raises(error) as info:
            store.upsert(ids, vectors, metadata)
        assert str(info.value)
        store.flush()
        assert store.count() == 1
        assert store.fetch(["a"]) == []

    def test_error_names_the_record(self, make):
        store = make()
        with pytest.raises(MetadataError, match=r"'b'.*'color'"):
            store.upsert(["a", "b"], np.ones((2, 8)), [{}, {"color": None}])
        with pytest.raises(VectorError, match="'b'"):
            store.upsert(["a", "b"], [[1.0] * 8, [math.nan] * 8])

    def test_bad_queries(self, loaded):
        store = loaded[0]
        with pytest.raises(DimensionError):
            store.search(np.ones(5), 3)
        with pytest.raises(VectorError):
            store.search([math.nan] * 8, 3)
        with pytest.raises(StoreError):
            store.search(np.ones(8), 0)
