"""Pinecone under faults, against the loopback server: throttling, outages, dropped
connections, an ingest interrupted midway, and eventual consistency. No vector may be lost,
and no request may break a Pinecone limit.

The ingestion pipeline needs the embedding cache, which does not exist yet, so the
interrupted ingest drives the store directly the way the pipeline does: upsert in batches,
and on failure upsert the same records again.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from embedrec import StoreUnavailable, open_store
from embedrec.testing.pinecone_loopback import Fault, LoopbackPinecone

FAST = "retries=3&backoff=0.01"


@pytest.fixture(scope="module")
def server():
    srv = LoopbackPinecone()
    yield srv
    srv.close()
    assert srv.violations == [], f"requests that broke Pinecone's limits: {srv.violations}"


@pytest.fixture
def store(server, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
    monkeypatch.setenv("PINECONE_HOST", "")
    server.faults.clear()
    server.visibility_delay = 0.0
    uri = f"pinecone://f-{uuid.uuid4().hex[:12]}?namespace=n&create=1&{FAST}&flush_timeout=5"
    with open_store(uri, dim=16, metric="cosine") as s:
        server.reset_log()
        yield s
    server.faults.clear()
    server.visibility_delay = 0.0


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 16)).astype(np.float32)
    return [f"d{i}" for i in range(n)], vectors, [{"i": i} for i in range(n)]


def assert_all_there(store, ids, vectors):
    store.flush()
    assert store.count() == len(ids)
    got = {r.id: r.vector for r in store.fetch(ids)}
    assert set(got) == set(ids)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, rid in enumerate(ids):
        np.testing.assert_allclose(got[rid], unit[i], atol=1e-6)


def test_throttling_then_success_loses_nothing(store, server):
    ids, vectors, meta = data(500)
    server.inject(Fault(429, times=2, endpoint="/vectors/upsert"))
    assert store.upsert(ids, vectors, meta) == 500
    statuses = [r.status for r in server.requests("/vectors/upsert")]
    assert statuses[:3] == [429, 429, 200]
    assert_all_there(store, ids, vectors)


def test_persistent_503_gives_store_unavailable_after_bounded_retries(store, server):
    server.inject(Fault(503, times=100, endpoint="/query"))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"'f-.*query failed 4 times"):
        store.search(np.ones(16), 3)
    assert len(server.requests("/query")) == 4  # 1 + retries=3, no SDK retries beneath
    assert time.monotonic() - started < 2


def test_one_503_is_one_request_so_the_sdk_does_not_retry_beneath_us(server, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
    monkeypatch.setenv("PINECONE_HOST", "")
    uri = f"pinecone://f-{uuid.uuid4().hex[:12]}?create=1&retries=0"
    with open_store(uri, dim=4) as s:
        server.reset_log()
        server.inject(Fault(503, times=1, endpoint="/query"))
        with pytest.raises(StoreUnavailable, match="failed 1 times"):
            s.search(np.ones(4), 1)
        assert len(server.requests("/query")) == 1


def test_dropped_connection_is_retried(store, server):
    ids, vectors, meta = data(300)
    server.inject(Fault(None, times=1, endpoint="/vectors/upsert"))
    assert store.upsert(ids, vectors, meta) == 300
    assert [r.status for r in server.requests("/vectors/upsert")][:2] == [0, 200]
    assert_all_there(store, ids, vectors)


def test_interrupted_ingest_resumes_with_nothing_lost(store, server):
    ids, vectors, meta = data(3000, seed=1)
    # the 3rd request and its 3 retries fail: the store gives up midway
    server.inject(Fault(503, times=2, endpoint="/vectors/upsert"))
    store.upsert(ids[:1000], vectors[:1000], meta[:1000])
    server.inject(Fault(503, times=4, endpoint="/vectors/upsert"))
    with pytest.raises(StoreUnavailable, match="upserting the same records again resumes"):
        store.upsert(ids[1000:], vectors[1000:], meta[1000:])
    store.flush()
    assert 1000 <= store.count() < 3000
    assert store.upsert(ids[1000:], vectors[1000:], meta[1000:]) == 2000  # resume
    assert_all_there(store, ids, vectors)


def test_delayed_visibility_is_absorbed_by_flush(store, server):
    ids, vectors, meta = data(400, seed=2)
    server.visibility_delay = 0.4
    store.upsert(ids, vectors, meta)
    assert store._index.describe_index_stats().namespaces == {}  # not visible yet
    store.flush()
    assert store.count() == 400
    assert store.count({"i": {"$lt": 100}}) == 100
    hits = store.search(vectors[5], 1)[0]
    assert hits[0].id == "d5"
    store.upsert(["late"], np.ones((1, 16)))
    assert store.search(np.ones(16), 1)[0][0].id == "late"  # search flushes first
    assert_all_there(store, [*ids, "late"], np.vstack([vectors, np.ones((1, 16))]))


def test_flush_times_out_with_a_clear_error(server, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
    monkeypatch.setenv("PINECONE_HOST", "")
    uri = f"pinecone://f-{uuid.uuid4().hex[:12]}?create=1&flush_timeout=0.2"
    s = open_store(uri, dim=4)
    server.visibility_delay = 30
    try:
        s.upsert(["a"], np.ones((1, 4)))
        with pytest.raises(StoreUnavailable, match="reports 0 vectors, 1 expected"):
            s.flush()
    finally:
        server.visibility_delay = 0
        s._pending.dirty = False  # nothing more to wait for; close without flushing
        s.close()
