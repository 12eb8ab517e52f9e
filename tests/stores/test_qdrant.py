"""Qdrant through qdrant-client's local mode (`qdrant+memory`, `qdrant+local`): the
conformance suite, the filter translation, and the errors of a locked folder and of a
server that does not answer."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from embedrec import StoreLocked, StoreNotFound, StoreUnavailable, open_store
from embedrec.stores import ConfigError
from embedrec.stores.filters import parse_filter
from embedrec.stores.qdrant.client_engine import DIALECT, QdrantClientStore
from embedrec.stores.qdrant.dialect import from_payload, index_schema, to_payload, translate
from tests.stores.conformance import StoreConformance


class TestQdrantMemory(StoreConformance):
    def uri(self, location: Path) -> str:
        return f"qdrant+memory:{location.name}"


class TestQdrantLocal(StoreConformance):
    filter_examples = 20  # the same translation as qdrant+memory, which runs the full 60

    def uri(self, location: Path) -> str:
        return f"qdrant+local:{location}/items"


@pytest.fixture
def store(tmp_path):
    with open_store(f"qdrant+local:{tmp_path}/q/items", dim=4, metric="dot") as s:
        yield s


def _ids(store, flt) -> list[str]:
    return sorted(h.id for h in store.search(np.ones(4), 20, filter=flt)[0])


def test_negations_on_list_fields_mean_no_element_matches(store):
    rows = [{"tags": ["a", "b"]}, {"tags": ["b", "c"]}, {"tags": ["c"]}, {"tags": []}, {}]
    store.upsert(["ab", "bc", "c", "empty", "none"], np.eye(4)[[0, 1, 2, 3, 3]], rows)
    # Qdrant's `except: [a]` holds for ["a", "b"] (b is outside the list); ours must not
    assert _ids(store, {"tags": {"$nin": ["a"]}}) == ["bc", "c", "empty", "none"]
    assert _ids(store, {"tags": {"$ne": "b"}}) == ["c", "empty", "none"]
    assert _ids(store, {"tags": {"$nin": ["a", "c"]}}) == ["empty", "none"]
    assert _ids(store, {"tags": {"$exists": True}}) == ["ab", "bc", "c", "empty"]
    assert _ids(store, {"tags": {"$exists": False}}) == ["none"]


def test_values_compare_within_their_type(store):
    rows = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": 2.5}, {"v": False}, {"v": 0}]
    store.upsert(["i", "f", "t", "s", "x", "false", "zero"], np.ones((7, 4)), rows)
    assert _ids(store, {"v": 1}) == ["f", "i"]
    assert _ids(store, {"v": True}) == ["t"]
    assert _ids(store, {"v": "1"}) == ["s"]
    assert _ids(store, {"v": {"$gte": 1}}) == ["f", "i", "x"]
    assert _ids(store, {"v": {"$in": [True, "1", 2.5]}}) == ["s", "t", "x"]
    assert _ids(store, {"v": {"$nin": [0, False]}}) == ["f", "i", "s", "t", "x"]


def test_keys_qdrant_paths_cannot_spell_round_trip(store):
    meta = {'say "hi"': "x", "back\\slash": 2, "a.b[0]": "dot", "$": 1}
    meta.pop("$")  # `$` keys are reserved by the store interface itself
    store.upsert(["k"], [np.ones(4)], [meta])
    assert store.fetch(["k"])[0].metadata == meta
    assert _ids(store, {'say "hi"': "x"}) == ["k"]
    assert _ids(store, {"back\\slash": {"$gt": 1}}) == ["k"]
    assert _ids(store, {"a.b[0]": "dot"}) == ["k"]


def test_reserved_payload_keys_stay_hidden():
    payload = to_payload("r1", {"id": "user's own id", "tags": [], "ok": True}, True)
    assert payload["$id"] == "r1" and payload["$empty"] == ["tags"] and payload["$bool"] == ["1ok"]
    assert from_payload(payload) == ("r1", {"id": "user's own id", "tags": [], "ok": True})


def test_nin_translates_to_must_not_match_any_never_except():
    qfilter = translate(parse_filter({"tags": {"$nin": ["a", "b"]}}), DIALECT)
    (cond,) = qfilter.must_not
    assert cond.key == '"tags"' and cond.match.any == ["a", "b"]
    assert "except" not in qfilter.model_dump_json(exclude_none=True)


def test_filtered_fields_get_payload_index_types():
    node = parse_filter({"genre": {"$in": ["x"]}, "year": {"$gte": 1990}, "ok": True})
    assert index_schema(node, DIALECT) == {"genre": "keyword", "year": "float", "ok": "bool"}


def test_search_params_are_refused_where_search_is_exact(store):
    assert store.capabilities.exact and store.capabilities.search_params == ()
    with pytest.raises(ConfigError, match="ef"):
        store.search(np.ones(4), 1, params={"ef": 32})


def test_declared_fields_need_no_index_in_local_mode(store):
    store.declare_fields({"genre": "str", "year": "int", "ok": "bool"})
    assert store.indexed == set() and not store.stale_graph
    store.upsert(["a", "b"], np.eye(4)[:2], [{"genre": "x", "year": 1}, {"ok": True}])
    assert _ids(store, {"year": 1}) == ["a"] and _ids(store, {"ok": True}) == ["b"]


def test_server_options_are_refused_in_local_mode(tmp_path):
    with pytest.raises(ConfigError, match="server only"):
        open_store(f"qdrant+local:{tmp_path}/items?m=32", dim=4)
    with pytest.raises(ConfigError, match="indexes"):
        open_store("qdrant+memory:items?indexes=genre", dim=4)


def test_second_opener_of_a_local_path_is_locked(tmp_path):
    with (
        open_store(f"qdrant+local:{tmp_path}/items", dim=4),
        pytest.raises(StoreLocked, match="open in another client"),
    ):
        open_store(f"qdrant+local:{tmp_path}/items")


def test_missing_collection_needs_dim(tmp_path):
    with pytest.raises(StoreNotFound, match="pass dim"):
        open_store(f"qdrant+local:{tmp_path}/items")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_unavailable_naming_the_url():
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"http://127.0.0.1:{port}"):
        open_store(f"qdrant://127.0.0.1:{port}/items?timeout=2", dim=4)
    assert time.monotonic() - start < 5


def test_silent_server_times_out_within_the_limit():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}.*timeout 1 s"):
            open_store(f"qdrant://127.0.0.1:{port}/items?timeout=1", dim=4)
        assert time.monotonic() - start < 4


class FakeEngine:
    """An ANN engine that answers every row with `found` points unless asked exactly, and
    records each query's (rows, ef, exact): the store's search planning, without Qdrant."""

    dialect, ann, persistent, remote = DIALECT, True, False, False
    dim, metric, hnsw_m, default_ef, stale_graph = 4, "dot", 16, 100, False

    def __init__(self, total: int, matched: int, found: list[int]) -> None:
        self.total, self.matched, self.found = total, matched, found
        self.calls: list[tuple[int, int | None, bool]] = []
        self.counts = 0

    @contextlib.contextmanager
    def guard(self):
        yield

    def indexed(self) -> set[str]:
        return {"g"}

    def read_info(self) -> None:  # no store info: no calibrated search defaults
        return None

    def count(self, qfilter) -> int:
        self.counts += 1
        return self.total if qfilter is None else self.matched

    def upsert(self, ids, rows, payloads) -> None:
        self.total += len(ids)

    def query(self, vectors, filters, k, ef, exact):
        self.calls.append((len(vectors), ef, exact))
        point = SimpleNamespace(payload={"$id": "x"}, score=1.0)
        sizes = [k] * len(vectors) if exact else self.found[: len(vectors)]
        return [[point] * n for n in sizes]


def _planned(total: int, matched: int, found: list[int], **params):
    engine = FakeEngine(total, matched, found)
    store = QdrantClientStore("fake:", engine, None, [])  # type: ignore[arg-type]
    hits = store.search(np.ones((len(found), 4)), 10, filter={"g": "a"}, params=params)
    return engine.calls, [len(h) for h in hits]


def test_few_matches_are_searched_exactly():
    # 1,000 matches of 10,000: no more than twice what the graph search scores, ef 100 * m 16
    assert _planned(10_000, 1_000, [3, 10]) == ([(2, None, True)], [10, 10])


def test_broad_filters_keep_ef_and_short_rows_are_answered_exactly():
    calls, sizes = _planned(1_000_000, 100_000, [10, 4, 10, 7])
    assert calls == [(4, None, False), (2, None, True)]  # Qdrant keeps matching candidates
    assert sizes == [10] * 4
    calls, _ = _planned(100_000_000, 1_000_000, [10], ef=64)
    assert calls == [(1, 64, False)]


def test_filter_counts_are_kept_until_the_next_write():
    """Counting per query cost more than the search (qdrant-edge collects every match)."""
    engine = FakeEngine(1_000_000, 100_000, [10, 10])
    store = QdrantClientStore("fake:", engine, None, [])  # type: ignore[arg-type]
    for _ in range(3):
        store.search(np.ones((1, 4)), 10, filter={"g": "a"})
    assert engine.counts == 1  # the filter's matches, once
    store.search(np.ones((1, 4)), 10, filter={"g": "b"})
    assert engine.counts == 2
    store.upsert(["n"], np.ones((1, 4)))
    store.search(np.ones((1, 4)), 10, filter={"g": "a"})
    assert engine.counts == 3


def test_no_match_is_one_exact_search_of_nothing():
    # a count kept from before another writer's write only steers the plan, never the answer
    calls, _ = _planned(10_000, 0, [10])
    assert calls == [(1, None, True)]
