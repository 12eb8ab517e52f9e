"""Hostile and careless input, for every store: `StoreConformance` inherits these tests.

Each class of input here once lost data or answered wrongly on some store: text that cannot
be written (lone surrogates), vectors whose norm overflows float32, integers that float64
rounds, absurd k, k at or above the store's size, filters deep or wide enough to exhaust the
stack, vectors of strings, bools or None, ids and vectors of different counts. The fuzz
test drives the whole API with such input: every call either succeeds and reads back exactly
what was written, or raises a `StoreError`, and the store stays writable and reopenable.
"""

from __future__ import annotations

import math
from typing import Any

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
    matches,
)
from embedrec.common.vectors import l2_normalize
from embedrec.stores.base import check_metadata

LONE = "caf\udce9"
"""Text decoded with errors="surrogateescape": a str that UTF-8 cannot write."""

weird_text = st.sampled_from(
    [LONE, "\ud800", "a\x00b", " ", "~u:x", "x" * 600, "名前", "é", "$x", "a.b", "%2F"]
)
texts = st.one_of(st.text(max_size=6), weird_text)
ids = st.one_of(st.text(min_size=1, max_size=6), weird_text, st.integers(-5, 10**20))
big_ints = st.sampled_from([2**53, -(2**53), 2**53 + 1, -(2**53) - 1, 2**63, 10**30])
plain_values = st.one_of(
    st.text(max_size=6),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6),
    st.booleans(),
    st.lists(st.text(max_size=4), max_size=3),
)
wild_values = st.one_of(
    weird_text,
    big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.lists(texts, max_size=3),
    st.lists(st.integers(0, 3), min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 2), max_size=1),
)
values = st.one_of(plain_values, plain_values, plain_values, wild_values)
keys = st.one_of(st.sampled_from(["genre", "n", "tags", "flag"]), texts)
metadatas = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4))
plain_vectors = st.lists(st.integers(-1000, 1000).map(lambda v: v / 8), min_size=8, max_size=8)
specials = st.sampled_from([math.nan, math.inf, -math.inf, 3e38, 1e20, 1e-30])
WRONG_VECTORS = [
    ["a"] * 8,  # was numpy's ValueError
    ["1.5"] * 8,  # numpy would have read the strings as numbers
    [None] * 8,
    [True] * 8,
    [1j] * 8,
    [1.0] * 7,
    [[1.0]] * 8,
    "abcdefgh",
    None,
]
"""Vectors of the wrong type or shape: each is a `VectorError` or `DimensionError`."""


def _spoil(vector: list[float], at: int, value: float) -> list[float]:
    return [value if n == at else v for n, v in enumerate(vector)]


edge_text = st.sampled_from(["a\x00b", " ", "~u:x", "x" * 600, "名前", "é", "a.b", "%2F", "🙂"])
edge_values = st.one_of(
    edge_text,
    st.sampled_from([2**53, -(2**53), 0, -1, 1e300, -1e-300, 0.1, True, False]),
    st.lists(edge_text, max_size=3),
)
edge_metadatas = st.dictionaries(
    st.one_of(st.sampled_from(["genre", "n", "tags", "flag"]), edge_text),
    st.one_of(plain_values, edge_values),
    max_size=4,
)
writable = st.lists(
    st.tuples(
        st.one_of(st.text(min_size=1, max_size=6), edge_text, st.integers(-5, 10**20)),
        plain_vectors,
        st.one_of(st.none(), edge_metadatas),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda row: str(row[0]),
)
taints = st.one_of(
    st.tuples(st.just("id"), st.sampled_from([LONE, "\ud800", "", "k\udfffx"])),
    st.tuples(st.just("key"), st.sampled_from([LONE, "$x", ""])),
    st.tuples(st.just("value"), wild_values),
    st.tuples(st.just("vector"), specials),
    st.tuples(st.just("wrong vector"), st.sampled_from(WRONG_VECTORS)),
)


def _taint(batch: list[tuple], taint: tuple[str, Any]) -> list[tuple]:
    """The batch with one hostile field in its first record."""
    (rid, vector, meta), what, value = batch[0], *taint
    if what == "id":
        rid = value
    elif what == "vector":
        vector = _spoil(vector, 0, value)
    elif what == "wrong vector":
        vector = value
    else:
        meta = dict(meta or {})
        meta.update({value: 1} if what == "key" else {"genre": value})
    return [(rid, vector, meta), *batch[1:]]


hostile = st.builds(_taint, writable, taints)
vectors = st.one_of(
    plain_vectors,
    plain_vectors,
    plain_vectors,
    st.builds(_spoil, plain_vectors, st.integers(0, 7), specials),
)
simple_filters = st.one_of(
    st.builds(lambda v: {"genre": v}, plain_values),
    st.builds(lambda v: {"n": {"$gte": v}}, st.integers(-1000, 1000)),
    st.builds(lambda v: {"tags": {"$in": v}}, st.lists(st.text(max_size=4), min_size=1)),
    st.builds(lambda f: {"flag": {"$exists": f}}, st.booleans()),
)
OPERATORS = ["$and", "$or", "$in", "$nin", "$eq", "$ne", "$gt", "$lte", "$exists"]
wild_filters = st.recursive(
    st.one_of(texts, st.integers(-3, 3), big_ints, st.floats(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from([*OPERATORS, "$x", "genre", "n", "tags", "flag", LONE]),
            inner,
            max_size=2,
        ),
    ),
    max_leaves=8,
)
ks = st.one_of(
    st.integers(1, 30), st.sampled_from([0, -1, 2**31, 10**20, True]), st.integers(100, 10**9)
)


def nested(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"genre": "a"}
    for _ in range(depth):
        flt = {"$and": [flt]}
    return flt


class StoreHardening:
    """Mixed into `StoreConformance`; uses its `make` and `reopen`."""

    fuzz_examples = 60

    def _untouched(self, store: Any) -> None:
        """The store still holds only "keep", takes a write, and reopens with both."""
        assert store.count() == 1 and store.fetch(["keep"])[0].id == "keep"
        store.upsert(["after"], np.ones((1, 8)))
        store.flush()
        if store.capabilities.persistent:
            reopened = self.reopen(store)  # type: ignore[attr-defined]
            assert reopened.count() == 2
            reopened.close()

    @pytest.mark.parametrize(
        "ids, metadata, error, named",
        [
            ([LONE], None, IdError, r"caf\\udce9"),
            (["a"], [{"name": LONE}], MetadataError, r"'a'.*'name'"),
            (["a"], [{"k\ud800": "v"}], MetadataError, r"'a'.*k\\ud800"),
            (["a"], [{"tags": ["ok", LONE]}], MetadataError, r"'a'.*'tags'"),
        ],
    )
    def test_unwritable_text_is_refused_at_upsert(self, make, ids, metadata, error, named):
        store = make()
        store.upsert(["keep"], np.ones((1, 8)), [{"x": 1}])
        with pytest.raises(error, match=named) as info:
            store.upsert([*ids, "b"], np.ones((len(ids) + 1, 8)), metadata and [*metadata, {}])
        str(info.value).encode("utf-8")  # the message itself can be printed and logged
        self._untouched(store)

    @pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
    def test_vectors_whose_norm_overflows_are_refused(self, make, metric):
        store = make(metric=metric)
        store.upsert(["keep"], np.ones((1, 8)))
        for huge in ([3e38] * 8, [1e20] + [0.0] * 7):
            with pytest.raises(VectorError, match=r"'b'.*overflows"):
                store.upsert(["a", "b"], [[1.0] * 8, huge])
            with pytest.raises(VectorError, match="query 0"):
                store.search([huge], 1)
        self._untouched(store)

    def test_integers_beyond_2_53_are_refused(self, make):
        store = make()
        store.upsert(["keep"], np.ones((1, 8)), [{"n": 2**53}])
        for n in (2**53 + 1, -(2**53) - 1, 2**63):
            with pytest.raises(MetadataError, match=r"'b'.*'n'.*2\*\*53"):
                store.upsert(["b"], np.ones((1, 8)), [{"n": n}])
        for flt in ({"n": 2**53 + 1}, {"n": {"$in": [1, -(2**60)]}}, {"n": {"$gt": 2**63}}):
            with pytest.raises(FilterError, match="2\\*\\*53"):
                store.search(np.ones(8), 1, filter=flt)
        assert [h.id for h in store.search(np.ones(8), 1, filter={"n": 2**53})[0]] == ["keep"]
        assert store.fetch(["keep"])[0].metadata == {"n": 2**53}
        self._untouched(store)

    def test_absurd_k_is_refused_and_large_k_is_capped(self, make):
        store = make()
        store.upsert([f"r{i}" for i in range(10)], np.eye(8)[np.arange(10) % 8] + 0.1)
        store.flush()
        for k in (2**31, 10**20):
            with pytest.raises(StoreError, match="k="):
                store.search(np.ones(8), k)
        if store.capabilities.max_k is None:
            assert len(store.search(np.ones(8), 10**9)[0]) == 10

    def test_k_at_or_above_the_store_size_returns_every_record(self, make):
        n = 1500
        rng = np.random.default_rng(8)
        store = make(dim=8, metric="l2")
        store.upsert([str(i) for i in range(n)], rng.standard_normal((n, 8)))
        store.flush()
        for k in (n, n + 1, 3 * n):
            if store.capabilities.max_k is not None and k > store.capabilities.max_k:
                continue
            got = store.search(rng.standard_normal((2, 8)), k)
            assert [len(hits) for hits in got] == [n, n]
            assert len(set(got[0].ids)) == n

    def test_filter_depth_and_size_limits(self, make):
        store = make()
        store.upsert(["keep"], np.ones((1, 8)), [{"genre": "a"}])
        assert [h.id for h in store.search(np.ones(8), 1, filter=nested(15))[0]] == ["keep"]
        too_wide = {"$or": [{"n": i} for i in range(1001)]}
        too_many = {"n": {"$in": list(range(10_001))}}
        for flt in (nested(17), nested(500), nested(5000), too_wide, too_many):
            with pytest.raises(FilterError, match="at most"):
                store.search(np.ones(8), 1, filter=flt)
            with pytest.raises(FilterError):
                store.count(flt)
            with pytest.raises(FilterError):
                store.delete(filter=flt)
        assert store.count() == 1

    @pytest.mark.parametrize("wrong", WRONG_VECTORS, ids=repr)
    def test_vectors_of_the_wrong_type_are_refused_naming_the_record(self, make, wrong):
        store = make()
        store.upsert(["keep"], np.ones((1, 8)))
        with pytest.raises((VectorError, DimensionError), match=r"'b'|vectors") as info:
            store.upsert(["a", "b"], [[1.0] * 8, wrong])
        if wrong not in ([1.0] * 7, [[1.0]] * 8):
            assert isinstance(info.value, VectorError)
        with pytest.raises((VectorError, DimensionError)):
            store.upsert(["b"], [wrong])
        with pytest.raises((VectorError, DimensionError)):
            store.search([wrong], 1)
        self._untouched(store)

    @pytest.mark.parametrize(
        "ids, rows", [([], 3), (["a"], 2), (["a", "b"], 1), (["a", "b", "c"], 0)]
    )
    def test_ids_and_vectors_of_different_counts_are_refused(self, make, ids, rows):
        """`upsert([], <3 vectors>)` returned 0 and wrote nothing, silently."""
        store = make()
        store.upsert(["keep"], np.ones((1, 8)))
        with pytest.raises(IdError, match=f"{len(ids)} ids for {rows} vectors"):
            store.upsert(ids, np.ones((rows, 8)))
        assert store.upsert([], np.empty((0, 8))) == 0 and store.upsert([], []) == 0
        self._untouched(store)

    # -- fuzz -------------------------------------------------------------------------------

    def test_fuzz_store_api(self, make):
        """Hypothesis over upsert / fetch / search / delete with hostile input."""
        store = make(dim=8, metric="cosine")
        model: dict[str, tuple[np.ndarray, dict]] = {}
        store.upsert(["keep"], np.ones((1, 8)), [{"genre": "a"}])
        model["keep"] = (l2_normalize(np.ones((1, 8), "f4"), zero_rows="refuse")[0], {"genre": "a"})
        tries = {"examples": 0, "refused": 0, "written": 0, "searched": 0}

        @settings(
            max_examples=self.fuzz_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            batch=st.one_of(
                writable,
                writable,
                st.lists(st.tuples(ids, vectors, metadatas), min_size=1, max_size=4),
            ),
            flt=st.one_of(st.none(), simple_filters, wild_filters),
            k=ks,
            delete=st.booleans(),
            miscount=st.sampled_from([0, 0, 0, -1, 1]),
        )
        def step(batch, flt, k, delete, miscount):
            tries["examples"] += 1
            self._fuzz_write(store, model, batch, tries, miscount)
            self._fuzz_search(store, model, flt, k, tries)
            if delete and len(model) > 1:
                gone = sorted(i for i in model if i != "keep")[-1]
                assert store.delete([gone]) == 1
                del model[gone]

        step()
        store.flush()
        assert store.count() == len(model)
        self._fuzz_check(store, model)
        if store.capabilities.persistent:
            reopened = self.reopen(store)  # type: ignore[attr-defined]
            self._fuzz_check(reopened, model)
            reopened.upsert(["late"], np.ones((1, 8)))
            reopened.close()
        print(f"fuzz {store.uri}: {tries}")

    def _fuzz_write(
        self, store: Any, model: dict, batch: list, tries: dict, miscount: int = 0
    ) -> None:
        """Upsert `batch`; with `miscount`, one id fewer (-1) or one more (1) than vectors,
        which must be refused (`IdError`) with the store unchanged."""
        rows = [r for r in batch if r[0] != "keep"]
        if not rows:
            return
        ids_, vectors, metas = zip(*rows, strict=True)
        if miscount:
            count = store.count()
            given = list(ids_)[: len(ids_) + miscount] if miscount < 0 else [*ids_, "extra"]
            with pytest.raises(StoreError):
                store.upsert(given, list(vectors))
            assert store.count() == count
            tries["refused"] += 1
            return
        try:
            store.upsert(list(ids_), list(vectors), list(metas))
        except StoreError:
            tries["refused"] += 1
            return
        tries["written"] += 1
        for raw, vector, meta in rows:
            rid = raw if isinstance(raw, str) else str(raw)
            unit = l2_normalize(np.asarray([vector], "f4"), zero_rows="refuse")[0]
            model[rid] = (unit, check_metadata(rid, meta))
        self._fuzz_check(store, {str(r): model[str(r)] for r in ids_})

    def _fuzz_check(self, store: Any, expected: dict) -> None:
        got = store.fetch(list(expected))
        assert [r.id for r in got] == list(expected)
        atol = 1e-5 if store.capabilities.exact_vectors else 2e-2
        for record in got:
            vector, meta = expected[record.id]
            np.testing.assert_allclose(record.vector, vector, atol=atol)
            assert record.metadata == meta, record.id
            assert all(
                isinstance(record.metadata[key], bool) == isinstance(value, bool)
                for key, value in meta.items()
            ), record.id  # True == 1 in Python, not in a store

    def _fuzz_search(self, store: Any, model: dict, flt: Any, k: Any, tries: dict) -> None:
        try:
            hits = store.search(np.ones(8), k, filter=flt)[0]
        except StoreError:
            tries["refused"] += 1
            return
        tries["searched"] += 1
        allowed = {i for i, (_, m) in model.items() if matches(m, flt or {})}
        assert set(hits.ids) <= allowed
        assert len(hits) == min(k, len(allowed))
