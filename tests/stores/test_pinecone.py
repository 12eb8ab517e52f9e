"""Pinecone: the conformance suite against the loopback server (through the control plane,
and through PINECONE_HOST), the store's limits and translations, the loopback's own limit
checks and response shapes, and the suite against real Pinecone when PINECONE_API_KEY is set.

Every store request in this module goes to one loopback server, and at the end of the
module it must have seen no request that breaks a Pinecone limit.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import orjson
import pytest

from embedrec import DimensionError, MetadataError, StoreError, StoreNotFound, open_store
from embedrec.stores import AuthError, ConfigError, IdError
from embedrec.stores.filters import matches, parse_filter
from embedrec.stores.pinecone import (
    MAX_UPSERT_BYTES,
    translate_filter,
    upsert_batches,
    user_id,
    wire_id,
)
from embedrec.testing.pinecone_loopback import LoopbackPinecone
from tests.stores.conformance import StoreConformance


@pytest.fixture(scope="module", autouse=True)
def server():
    """The module's loopback server; no request may have broken a limit by the end."""
    srv = LoopbackPinecone()
    yield srv
    srv.close()
    assert srv.violations == [], f"requests that broke Pinecone's limits: {srv.violations}"


@pytest.fixture(autouse=True)
def loopback_env(server, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
    monkeypatch.setenv("PINECONE_HOST", "")  # "" is unset, and undone after each test


def index_name(location: Path) -> str:
    return "t-" + hashlib.sha1(str(location).encode()).hexdigest()[:16]


class TestPineconeHost(StoreConformance):
    """The suite on indexes reached through PINECONE_HOST (dimension and metric from
    `describe_index_stats`); index creation through the control plane is tested below."""

    server: ClassVar[LoopbackPinecone]

    @pytest.fixture(autouse=True)
    def _server(self, server):
        type(self).server = server

    def open_store(self, location: Path, dim: int | None = None, metric: str | None = None):
        name = index_name(location)
        if name not in self.server.indexes and dim is not None:
            pine = {"cosine": "cosine", "dot": "dotproduct", "l2": "euclidean"}
            self.server.create_index(name, dim, pine[metric or "cosine"])
        os.environ["PINECONE_HOST"] = self.server.data_host(name)  # undone by loopback_env
        return open_store(f"pinecone://{name}", dim=dim, metric=metric)


# -- the store's own rules -------------------------------------------------------------------


@pytest.fixture
def store(server):
    with open_store(f"pinecone://s-{uuid.uuid4().hex[:12]}?create=1", dim=384, metric="dot") as s:
        yield s


def test_upserts_are_cut_by_payload_size(store, server):
    rng = np.random.default_rng(0)
    n = 2500
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    meta = [{"text": "x" * 2000, "n": i} for i in range(n)]
    server.reset_log()
    assert store.upsert([f"v{i}" for i in range(n)], vectors, meta) == n
    sizes = [r.body_bytes for r in server.requests("/vectors/upsert")]
    assert max(sizes) <= MAX_UPSERT_BYTES
    assert n / 1000 < len(sizes) < n / 250  # cut by size at ~300 records, not by count
    assert min(sizes[:-1]) > MAX_UPSERT_BYTES * 0.99  # full batches, not a fixed count
    store.flush()
    assert store.count() == n
    got = store.fetch(["v7"])[0]
    np.testing.assert_array_equal(got.vector, vectors[7])  # float32 values exactly


def test_predicted_request_size_is_the_real_one(store, server):
    items = [{"id": f"a{i}", "values": [0.5] * 384, "metadata": {"k": "v" * i}} for i in range(9)]
    (batch,) = upsert_batches(items, "ns")
    body = orjson.dumps({"vectors": batch, "namespace": "ns"})
    small = list(upsert_batches(items, "ns", max_bytes=len(body)))
    assert len(small) == 1
    assert len(list(upsert_batches(items, "ns", max_bytes=len(body) - 1))) == 2


def test_fetch_and_delete_go_in_chunks_of_at_most_1000(store, server):
    n = 2300
    store.upsert([f"i{i}" for i in range(n)], np.ones((n, 384), dtype=np.float32))
    server.reset_log()
    assert len(store.fetch([f"i{i}" for i in range(n)])) == n
    assert store.delete([f"i{i}" for i in range(n)]) == n
    fetches = server.requests("/vectors/fetch")
    deletes = server.requests("/vectors/delete")
    assert len(deletes) == 3 and len(fetches) >= 3
    store.flush()
    assert store.count() == 0


def test_metadata_over_40kb_is_refused_before_sending(store, server):
    server.reset_log()
    with pytest.raises(MetadataError, match=r"'b'.*40960.*'big'"):
        store.upsert(["a", "b"], np.ones((2, 384)), [{}, {"big": "x" * 40990}])
    assert server.requests("/vectors/upsert") == []


def test_top_k_over_10000_is_a_clear_error(store):
    store.upsert(["a"], np.ones((1, 384)))
    with pytest.raises(StoreError, match=r"top_k=10,000"):
        store.search(np.ones(384), 10_001)


def test_top_k_over_1000_fetches_metadata_by_id(store, server):
    n = 1500
    rng = np.random.default_rng(2)
    store.upsert(
        [str(i) for i in range(n)], rng.standard_normal((n, 384)), [{"i": i} for i in range(n)]
    )
    hits = store.search(np.ones(384), 1200)[0]
    assert len(hits) == 1200 and all(h.metadata == {"i": int(h.id)} for h in hits)


def test_ids_pinecone_cannot_take_are_encoded_and_too_long_ones_refused(store):
    for rid in ["café", "~u:x", "a\x00b", "plain-id"]:
        assert user_id(wire_id(rid)) == rid
        assert wire_id(rid).isascii()
    assert wire_id("plain-id") == "plain-id"
    with pytest.raises(IdError, match="512"):
        store.upsert(["é" * 100], np.ones((1, 384)))


def test_control_plane_creates_describes_and_reopens(server):
    name = f"c-{uuid.uuid4().hex[:12]}"
    with open_store(f"pinecone://{name}?create=1&cloud=gcp&region=europe-west4", dim=6) as s:
        s.upsert(["a", "b"], np.eye(6)[:2])
        assert (s.dim, s.metric, s.host) == (6, "cosine", server.data_host(name))
    index = server.indexes[name]
    assert (index.dimension, index.metric, index.cloud, index.region) == (
        6,
        "cosine",
        "gcp",
        "europe-west4",
    )
    with open_store(f"pinecone://{name}") as again:
        assert again.count() == 2 and again.dim == 6


def test_missing_index_dimension_and_metric_mismatch(store):
    with pytest.raises(StoreNotFound, match="create=1"):
        open_store("pinecone://no-such-index")
    name = store.uri.split("//")[1].split("?")[0]
    with pytest.raises(DimensionError):
        open_store(f"pinecone://{name}", dim=8)
    with pytest.raises(ConfigError, match="metric"):
        open_store(f"pinecone://{name}", metric="cosine")


def test_bad_uri_and_missing_key(monkeypatch):
    with pytest.raises(ConfigError, match="index name"):
        open_store("pinecone://Not_Valid")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store("pinecone://abc?nope=1")
    monkeypatch.delenv("PINECONE_API_KEY")
    with pytest.raises(ConfigError, match="PINECONE_API_KEY"):
        open_store("pinecone://abc")


def test_wrong_key_is_a_clear_error_at_once(server, monkeypatch):
    server.required_key = "the-right-key"
    monkeypatch.setenv("PINECONE_API_KEY", "a-wrong-key")
    try:
        server.reset_log()
        with pytest.raises(AuthError, match="API key") as info:
            open_store("pinecone://whatever?retries=5")
        assert "a-wrong-key" not in str(info.value)
        assert len(server.log) == 1  # not retried
    finally:
        server.required_key = None


@pytest.mark.parametrize(
    "flt",
    [
        {"g": {"$ne": "x"}},
        {"g": {"$nin": ["x", 1, True]}},
        {"g": {"$in": [True, "x"]}},
        {"$or": [{}, {"g": "x"}]},
        {"$and": [{}, {"n": {"$gt": 1}}]},
    ],
)
def test_translated_filters_keep_our_semantics(flt):
    rows = [{"g": "x"}, {"g": "y"}, {"g": True}, {"g": 1}, {}, {"g": ["x", "z"]}, {"n": 3}]
    node = parse_filter(flt)
    pine = translate_filter(node)
    for row in rows:
        assert matches(row, pine or {}) == matches(row, node), (row, pine)


# -- the loopback server itself --------------------------------------------------------------


@pytest.fixture
def raw():
    srv = LoopbackPinecone()
    srv.create_index("raw", 4, "cosine")
    client = httpx.Client(base_url=srv.data_host("raw"), headers={"Api-Key": "k"})
    yield srv, client
    client.close()
    srv.close()


def _vec(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"v{i}", "values": [0.1, 0.2, 0.3, 0.4], **extra}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/vectors/upsert", {"vectors": [_vec(i) for i in range(1001)]}),
        ("/vectors/upsert", {"vectors": [_vec(0, metadata={"a": None})]}),
        ("/vectors/upsert", {"vectors": [_vec(0, metadata={"a": {"b": 1}})]}),
        ("/vectors/upsert", {"vectors": [_vec(0, metadata={"a": [1, 2]})]}),
        ("/vectors/upsert", {"vectors": [_vec(0, metadata={"a": "x" * 41000})]}),
        ("/vectors/upsert", {"vectors": [{"id": "é", "values": [0.0] * 4}]}),
        ("/vectors/upsert", {"vectors": [_vec(0, metadata={"t": "x" * 30000}) for _ in range(70)]}),
        ("/query", {"topK": 10001, "vector": [0.1] * 4}),
        ("/query", {"topK": 1001, "vector": [0.1] * 4, "includeMetadata": True}),
        ("/query", {"topK": 1, "vector": [0.1] * 4, "filter": {"a": {"$regex": "x"}}}),
        ("/query", {"topK": 1, "vector": [0.1] * 4, "filter": {"a": {"$in": [True]}}}),
        ("/query", {"topK": 1, "vector": [0.1] * 4, "filter": {"a": {"$gt": "x"}}}),
        ("/vectors/delete", {"ids": [f"v{i}" for i in range(1001)]}),
    ],
)
def test_loopback_refuses_and_records_every_limit(raw, path, body):
    srv, client = raw
    resp = client.post(path, content=orjson.dumps(body))
    assert resp.status_code == 400
    assert len(srv.violations) == 1


def test_loopback_fetch_limit(raw):
    srv, client = raw
    resp = client.get("/vectors/fetch", params={"ids": [f"v{i}" for i in range(1001)]})
    assert resp.status_code == 400 and len(srv.violations) == 1


def test_loopback_answers_in_the_sdks_own_shapes(raw):
    from pinecone._internal.adapters.indexes_adapter import IndexesAdapter
    from pinecone._internal.adapters.vectors_adapter import VectorsAdapter

    srv, client = raw
    up = client.post(
        "/vectors/upsert", content=orjson.dumps({"vectors": [_vec(1, metadata={"g": "a"})]})
    )
    assert VectorsAdapter.to_upsert_response(up.content).upserted_count == 1
    q = client.post(
        "/query", content=orjson.dumps({"topK": 1, "vector": [1, 0, 0, 0], "includeMetadata": True})
    )
    match = VectorsAdapter.to_query_response(q.content).matches[0]
    assert match.id == "v1" and match.metadata == {"g": "a"}
    f = client.get("/vectors/fetch", params={"ids": ["v1"]})
    assert VectorsAdapter.to_fetch_response(f.content).vectors["v1"].values == pytest.approx(
        [0.1, 0.2, 0.3, 0.4]
    )
    fm = client.post("/vectors/fetch_by_metadata", content=orjson.dumps({"filter": {"g": "a"}}))
    assert list(VectorsAdapter.to_fetch_by_metadata_response(fm.content).vectors) == ["v1"]
    s = client.post("/describe_index_stats", content=b"{}")
    stats = VectorsAdapter.to_stats_response(s.content)
    assert stats.dimension == 4 and stats.namespaces["__default__"].vector_count == 1
    lst = client.get("/vectors/list", params={"limit": 10})
    assert [v.id for v in VectorsAdapter.to_list_response(lst.content).vectors] == ["v1"]
    model = IndexesAdapter.to_index_model(
        httpx.get(f"{srv.url}/indexes/raw", headers={"Api-Key": "k"}).content
    )
    assert model.schema.fields["_values"].dimension == 4 and model.host == srv.data_host("raw")
    assert srv.violations == []


# -- real Pinecone ---------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("PINECONE_API_KEY"),
    reason="PINECONE_API_KEY is not set: the live Pinecone suite needs a real API key",
)
class TestPineconeLive(StoreConformance):
    """The suite against real Pinecone: one throwaway serverless index per (dim, metric),
    a namespace per test, every index deleted afterwards."""

    filter_examples = 15
    indexes: ClassVar[dict[tuple[int, str], str]] = {}
    located: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def loopback_env(self, monkeypatch):  # overrides the module's: real credentials
        monkeypatch.delenv("PINECONE_HOST", raising=False)
        monkeypatch.delenv("PINECONE_CONTROLLER_HOST", raising=False)

    @pytest.fixture(scope="class", autouse=True)
    def _cleanup(self):
        yield
        from pinecone import Pinecone

        pc = Pinecone(api_key=os.environ["PINECONE_API_KEY"])
        for name in self.indexes.values():
            pc.indexes.delete(name, timeout=120)
        self.indexes.clear()

    def open_store(self, location: Path, dim: int | None = None, metric: str | None = None):
        key = str(location)
        if dim is not None:
            combo = (dim, metric or "cosine")
            if combo not in self.indexes:
                self.indexes[combo] = f"embedrec-test-{uuid.uuid4().hex[:10]}"
            self.located[key] = self.indexes[combo]
        namespace = index_name(location)
        uri = f"pinecone://{self.located[key]}?namespace={namespace}&create=1&flush_timeout=120"
        return open_store(uri, dim=dim, metric=metric)
