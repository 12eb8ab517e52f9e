"""Qdrant Edge (`qdrant+edge:PATH`, Qdrant's engine in process): the conformance suite,
HNSW built on flush, payload indexes, persistence and the single-opener lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedrec import StoreError, StoreLocked, StoreNotFound, open_store
from embedrec.stores.qdrant_edge import QdrantEdgeStore
from tests.stores.conformance import StoreConformance, brute_force


class TestQdrantEdge(StoreConformance):
    def uri(self, location: Path) -> str:
        return f"qdrant+edge:{location}"


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, d)).astype(np.float32)
    return centers[rng.integers(0, 16, n)] + 0.4 * rng.standard_normal((n, d)).astype(np.float32)


def _recall(hits, truth) -> float:
    pairs = zip(hits, truth, strict=True)
    return float(np.mean([len({h.id for h in g} & t) / len(t) for g, t in pairs]))


def test_flush_builds_hnsw_and_search_stays_right(tmp_path):
    # 4,000 x 768 float32 is 12 MB: past Qdrant's 10 MB indexing threshold
    base = _clustered(4000, 768)
    queries = base[:20] + 0.01
    ids = [str(i) for i in range(len(base))]
    store = open_store(f"qdrant+edge:{tmp_path}/e?m=8&ef_construct=32", dim=768, metric="l2")
    assert isinstance(store, QdrantEdgeStore)
    store.upsert(ids, base, [{"shard": i % 100} for i in range(len(base))])
    assert store.shard.info().indexed_vectors_count == 0
    truth = [{ids[j] for j in row} for row in np.argsort(-brute_force(base, queries, "l2"))[:, :10]]
    assert _recall(store.search(queries, 10), truth) == 1.0  # full scan before optimize
    store.flush()
    assert store.shard.info().indexed_vectors_count > 0
    assert _recall(store.search(queries, 10, params={"ef": 64}), truth) >= 0.9
    assert _recall(store.search(queries, 10, params={"exact": True}), truth) == 1.0
    flt = {"shard": 7}  # 1% selective: Qdrant plans it as an exact search of the 40 matches
    mask = np.array([i % 100 == 7 for i in range(len(base))])
    scores = brute_force(base[mask], queries, "l2")
    sel = np.flatnonzero(mask)
    ftruth = [{ids[sel[j]] for j in row} for row in np.argsort(-scores)[:, :10]]
    filtered = store.search(queries, 10, filter=flt)
    assert all(len(h) == 10 for h in filtered)
    assert _recall(filtered, ftruth) == 1.0
    assert "shard" in store.indexed
    store.close()


def test_declared_indexes_are_typed_by_first_value_and_persist(tmp_path):
    uri = f"qdrant+edge:{tmp_path}/e?indexes=genre,year,ok,never"
    store = open_store(uri, dim=4)
    store.upsert(["a", "b"], np.eye(4)[:2], [{"genre": ["x"], "year": 1999}, {"ok": True}])
    schema = store.shard.info().payload_schema
    assert {k: str(v.data_type) for k, v in schema.items()} == {
        "genre": "PayloadSchemaType.Keyword",
        "year": "PayloadSchemaType.Float",
        '"$bool"': "PayloadSchemaType.Keyword",  # booleans are matched through $bool here
    }
    assert store.pending_indexes == ["never"]
    assert [h.id for h in store.search(np.ones(4), 5, filter={"ok": True})[0]] == ["b"]
    store.close()
    with open_store(f"qdrant+edge:{tmp_path}/e") as again:
        assert again.indexed == {"genre", "year", "$bool"}
        assert again.count({"year": {"$lt": 2000.5}}) == 1


def test_optimize_then_reopen_keeps_records_and_index(tmp_path):
    base = _clustered(3500, 768, seed=2)
    store = open_store(f"qdrant+edge:{tmp_path}/e", dim=768, metric="cosine")
    store.upsert([f"p{i}" for i in range(len(base))], base)
    assert store.optimize() is True
    store.delete(["p0"])
    before = store.search(base[1:4], 5)
    store.close()
    store.close()  # a second close is harmless
    with pytest.raises(StoreError, match="closed"):
        store.count()
    with open_store(f"qdrant+edge:{tmp_path}/e") as again:
        assert again.count() == len(base) - 1
        assert again.shard.info().indexed_vectors_count > 0
        after = again.search(base[1:4], 5)
        assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]


def test_second_opener_in_this_process_gets_store_locked(tmp_path):
    with open_store(f"qdrant+edge:{tmp_path}/e", dim=4):
        with pytest.raises(StoreLocked, match="already open") as info:
            open_store(f"qdrant+edge:{tmp_path}/e")
        assert "WAL" not in str(info.value)


def test_second_opener_in_another_process_gets_store_locked(tmp_path):
    with open_store(f"qdrant+edge:{tmp_path}/e", dim=4):
        code = (
            "from embedrec import open_store, StoreLocked\n"
            f"try:\n    open_store('qdrant+edge:{tmp_path}/e')\n"
            "except StoreLocked as e:\n    print('locked:', e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("locked:"), out.stderr


def test_missing_store_needs_dim_and_foreign_shards_are_refused(tmp_path):
    with pytest.raises(StoreNotFound, match="pass dim"):
        open_store(f"qdrant+edge:{tmp_path}/nothing")
    import qdrant_edge as qe

    config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=4, distance=qe.Distance.Dot))
    qe.EdgeShard.create(str(tmp_path / "raw"), config).close()
    with pytest.raises(StoreError, match="did not create"):
        open_store(f"qdrant+edge:{tmp_path}/raw", dim=4)
