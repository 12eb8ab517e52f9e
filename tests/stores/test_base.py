import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest

from embedrec.stores.base import FrozenMetadata, Hit, Hits
from embedrec.stores.errors import ConfigError
from embedrec.stores.faiss import FaissStore
from embedrec.stores.uri import parse_uri


def test_frozen_metadata_refuses_every_change():
    meta = FrozenMetadata({"genre": "Drama", "tags": ["a"]})
    for change in (
        lambda m: m.__setitem__("genre", "x"),
        lambda m: m.__delitem__("genre"),
        lambda m: m.update(genre="x"),
        lambda m: m.setdefault("new", 1),
        lambda m: m.pop("genre"),
        lambda m: m.popitem(),
        lambda m: m.clear(),
        lambda m: m.__ior__({"genre": "x"}),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change(meta)
    assert meta == {"genre": "Drama", "tags": ["a"]}


def test_frozen_metadata_copies_are_plain_dicts():
    meta = FrozenMetadata({"genre": "Drama", "year": 1999})
    for twin in (dict(meta), meta.copy(), copy.copy(meta), pickle.loads(pickle.dumps(meta))):
        assert type(twin) is dict and twin == meta
        twin["genre"] = "x"
    assert copy.deepcopy(meta) == meta and meta["genre"] == "Drama"
    assert json.loads(json.dumps(meta)) == {"genre": "Drama", "year": 1999}
    assert isinstance(meta, dict) and meta | {"a": 1} == {"genre": "Drama", "year": 1999, "a": 1}


def test_hit_fields_and_unpacking():
    hit = Hit("a", 0.5, {"x": 1})
    assert (hit.id, hit.score, hit.metadata) == ("a", 0.5, {"x": 1})
    rid, score, meta = hit
    assert (rid, score, meta) == ("a", 0.5, {"x": 1}) and Hit("b", 1.0).metadata is None


def test_hits_read_as_a_sequence_of_hit():
    hits = Hits(["a", "b", "c"], [0.9, 0.5, 0.1], [{"x": 1}, None, {"y": "z"}])
    as_list = [Hit("a", 0.9, {"x": 1}), Hit("b", 0.5, None), Hit("c", 0.1, {"y": "z"})]
    assert len(hits) == 3 and list(hits) == as_list and hits == as_list and as_list == hits
    assert hits[0] == Hit("a", 0.9, {"x": 1}) and hits[-1].id == "c"
    assert hits[1:] == as_list[1:] and isinstance(hits[1:], Hits)
    assert hits.take([2, 0]) == [as_list[2], as_list[0]]
    assert [h.id for h in hits] == hits.ids and hits.scores == [0.9, 0.5, 0.1]
    (rid, score, meta), *_ = hits
    assert (rid, score, meta) == ("a", 0.9, {"x": 1})
    assert hits != as_list[:2] and hits != Hits(["a"], [0.9]) and hits != "abc"
    assert Hits() == [] and Hits(["a"], [1.0]).metadata == [None]
    assert repr(Hits(["a"], [1.0])) == "Hits([Hit(id='a', score=1.0, metadata=None)])"
    with pytest.raises(ValueError, match="2 ids for 1 scores"):
        Hits(["a", "b"], [1.0])


def test_hits_read_lazy_metadata_once_and_pickle_it():
    calls = []

    def read():
        calls.append(1)
        return [{"x": 1}]

    hits = Hits(["a"], [1.0], read)
    assert calls == []
    assert hits.metadata == [{"x": 1}] and hits[0].metadata == {"x": 1} and calls == [1]
    lazy = Hits(["a"], [1.0], lambda: [{"x": 2}])  # a lambda does not pickle: its result does
    assert pickle.loads(pickle.dumps(lazy)) == [Hit("a", 1.0, {"x": 2})]


def test_over_fetching_escalates_and_stops_at_max_k():
    """The base class's exclusion, as Pinecone uses it: FAISS answering, its own exclusion
    swapped for over-fetching, and a top-k limit like Pinecone's."""

    store = FaissStore.open(parse_uri("faiss:?index=Flat"), dim=2, metric="dot")
    store.capabilities = dataclasses.replace(store.capabilities, excludes_in_search=False)
    ids = [f"i{n}" for n in range(60)]
    store.upsert(ids, np.stack([np.linspace(1, 0, 60), np.zeros(60)], axis=1))
    seen = frozenset(ids[:40])  # the 40 best
    calls = []
    inner = store._search
    store._search = lambda q, k, node, params, ex: calls.append(k) or inner(q, k, node, params, ex)
    hits = store.search(np.array([1.0, 0.0]), 5, exclude=[seen])[0]
    assert [h.id for h in hits] == ids[40:45]
    assert calls == [21, 45]  # k + min(|excluded|, max(k, 16)), then k + |excluded|
    store.capabilities = dataclasses.replace(store.capabilities, max_k=30)
    calls.clear()
    assert store.search(np.array([1.0, 0.0]), 5, exclude=[seen]) == [[]]
    assert calls == [21, 30]  # capped: the row comes back short rather than failing


def test_declare_fields_checks_kinds_then_calls_the_hook():
    store = FaissStore.open(parse_uri("faiss:?index=Flat"), dim=2, metric="dot")
    seen = []
    store._declare_fields = seen.append
    store.declare_fields({"genre": "str", "year": "int", "tags": "list"})
    assert seen == [{"genre": "str", "year": "int", "tags": "list"}]
    for bad in ({"genre": "text"}, {"$x": "str"}, {"": "int"}, ["genre"]):
        with pytest.raises(ConfigError):
            store.declare_fields(bad)
    assert len(seen) == 1
    FaissStore.open(parse_uri("faiss:?index=Flat"), dim=2, metric="dot").declare_fields(
        {"genre": "str"}
    )  # a no-op for stores without payload indexes


def test_exclusion_reaches_the_hook_only_with_the_capability():
    store = FaissStore.open(parse_uri("faiss:?index=Flat"), dim=2, metric="dot")
    store.upsert(["a", "b", "c"], np.array([[1.0, 0], [0.9, 0], [0.8, 0]]))
    calls = []
    inner = store._search
    store._search = lambda q, k, node, params, ex: calls.append(ex) or inner(q, k, node, params, ex)
    assert store.search(np.array([1.0, 0.0]), 1, exclude=[{"a"}])[0].ids == ["b"]
    assert store.search(np.array([1.0, 0.0]), 1, exclude=[set()])[0].ids == ["a"]
    assert calls == [[{"a"}], None]  # no ids to leave out: a plain search
    store.capabilities = dataclasses.replace(store.capabilities, excludes_in_search=False)
    calls.clear()
    assert store.search(np.array([1.0, 0.0]), 1, exclude=[{"a"}])[0].ids == ["b"]
    assert calls == [None]  # over-fetched: the hook never sees the exclusion


def test_a_parsed_filter_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client parses a request's filter once and passes the tree down; the store takes it
    as it is and answers as it does for the mapping."""
    import embedrec.stores.base as base
    from embedrec.stores import open_store
    from embedrec.stores.filters import parse_filter

    store = open_store("faiss:", dim=4)
    rng = np.random.default_rng(0)
    store.upsert([f"r{i}" for i in range(20)], rng.normal(size=(20, 4)).astype("float32"),
                 [{"g": "ab"[i % 2]} for i in range(20)])  # fmt: skip
    query = rng.normal(size=(1, 4)).astype("float32")
    expected = store.search(query, 5, filter={"g": "a"})
    node = parse_filter({"g": "a"})

    def refuse(_: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(base, "parse_filter", refuse)
    got = store.search(query, 5, filter=node)
    assert [h.id for h in got[0]] == [h.id for h in expected[0]]
