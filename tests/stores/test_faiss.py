"""FAISS: the conformance suite on every index kind, plus what only FAISS has (training,
tombstones and compaction, persistence files, corruption, locking)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedrec import CorruptStore, StoreLocked, StoreNotFound, open_store
from embedrec.stores import ConfigError
from embedrec.stores.errors import StoreWriteError
from embedrec.stores.faiss import persistence
from embedrec.stores.faiss.columns_file import write_arrays
from embedrec.stores.faiss.store import COMPACT_DEAD_FRACTION
from tests.stores.conformance import StoreConformance, brute_force
from tests.stores.recall_conformance import RecallConformance


class TestFaissFlat(StoreConformance):
    def uri(self, location: Path) -> str:
        return f"faiss:{location}?index=Flat"


class TestFaissFlatInMemory(StoreConformance):
    def uri(self, location: Path) -> str:
        return "faiss:"


class TestFaissHNSW(RecallConformance, StoreConformance):
    def uri(self, location: Path) -> str:
        return f"faiss:{location}?index=HNSW16"


class TestFaissIVF(RecallConformance, StoreConformance):
    def uri(self, location: Path) -> str:
        return f"faiss:{location}?index=IVF,Flat"


class TestFaissSQ8(StoreConformance):
    def uri(self, location: Path) -> str:
        return f"faiss:{location}?index=SQ8"


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((32, d)).astype(np.float32)
    x = centers[rng.integers(0, 32, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(store, base, queries, k=10, **kw) -> float:
    truth = np.argsort(-brute_force(base, queries, store.metric), axis=1)[:, :k]
    got = store.search(queries, k, **kw)
    return float(
        np.mean(
            [
                len({int(h.id) for h in g} & set(t.tolist())) / k
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )


@pytest.mark.parametrize("kind", ["IVF,Flat", "IVF,PQ8", "SQ8"])
def test_trained_kinds_build_on_flush(tmp_path, kind):
    base, queries = clustered(3000, 32), clustered(50, 32, seed=1)
    store = open_store(f"faiss:{tmp_path}/s?index={kind}", dim=32, metric="cosine")
    store.upsert([str(i) for i in range(3000)], base)
    assert not store.built
    assert recall(store, base, queries) == 1.0  # exact while staged
    store.flush()
    assert store.built
    assert recall(store, base, queries) >= 0.9
    (record,) = store.fetch(["17"])
    atol = 2e-2 if kind == "SQ8" else 1e-6  # PQ keeps exact vectors in its refine stage
    np.testing.assert_allclose(record.vector, base[17], atol=atol)
    store.close()
    reopened = open_store(f"faiss:{tmp_path}/s")
    assert reopened.built and reopened.spec.name.startswith(kind.split(",")[0])
    assert recall(reopened, base, queries) >= 0.9
    reopened.close()


def test_ivf_nlist_from_data_size_and_nprobe_param(tmp_path):
    base = clustered(4000, 16)
    store = open_store("faiss:?index=IVF,Flat", dim=16)
    store.upsert([str(i) for i in range(4000)], base)
    store.flush()
    assert store._search_over.nlist == 102  # min(4 * sqrt(4000), 4000 // 39)
    queries = clustered(40, 16, seed=2)
    assert recall(store, base, queries, params={"nprobe": 102}) == 1.0
    assert recall(store, base, queries, params={"nprobe": 1}) < 1.0


def test_hnsw_tombstones_and_compact(tmp_path):
    base = clustered(1000, 16)
    store = open_store(f"faiss:{tmp_path}/h?index=HNSW32", dim=16)
    store.upsert([str(i) for i in range(1000)], base)
    store.delete([str(i) for i in range(100)])
    store.upsert(["500"], base[:1])  # overwrite: the old slot becomes a tombstone
    assert store._index.ntotal == 1001 and store.count() == 900
    hits = store.search(base[:5], 20)
    assert all(int(h.id) >= 100 for row in hits for h in row)
    assert hits[0][0].id == "500"
    store.compact()
    assert store._index.ntotal == 900 and store.count() == 900
    assert store.search(base[0], 1)[0][0].id == "500"
    assert store.capabilities.deletes is False


def test_flush_compacts_past_the_dead_fraction(tmp_path):
    """Tombstones stay until more than COMPACT_DEAD_FRACTION (set by benchmarks/churn.py) of
    the slots are dead, then flush() compacts."""
    store = open_store(f"faiss:{tmp_path}/h?index=HNSW16", dim=16)
    store.upsert([str(i) for i in range(400)], clustered(400, 16))
    at = round(400 * COMPACT_DEAD_FRACTION)
    store.delete([str(i) for i in range(at)])
    store.flush()
    assert store._index.ntotal == 400  # exactly the fraction dead: kept as tombstones
    store.delete([str(at)])
    store.flush()
    assert store._index.ntotal == 400 - at - 1


def test_filtered_search_one_percent_returns_k(tmp_path):
    base = clustered(5000, 32)
    meta = [{"bucket": i % 100} for i in range(5000)]
    store = open_store("faiss:?index=HNSW16&ef=16", dim=32)
    store.upsert([str(i) for i in range(5000)], base, meta)
    queries = clustered(20, 32, seed=4)
    rows = [i for i in range(5000) if i % 100 == 7]
    truth = np.argsort(-brute_force(base[rows], queries, "cosine"), axis=1)[:, :10]
    got = store.search(queries, 10, filter={"bucket": 7})
    assert all(len(g) == 10 for g in got)
    for g, t in zip(got, truth, strict=True):
        assert {int(h.id) for h in g} == {rows[j] for j in t}


@pytest.mark.parametrize("kind", ["Flat", "HNSW16", "IVF,PQ4"])
@pytest.mark.parametrize("selected", [3, 40, 900])
@pytest.mark.parametrize("n_queries", [1, 7])
def test_exact_filtered_search_agrees_with_brute_force(kind, selected, n_queries):
    """Both exact paths: the selected vectors gathered and scored in one product, and one
    flat scan through a selector (a single query over most of the slots)."""
    base = clustered(1000, 16)
    chosen = np.sort(np.random.default_rng(selected).choice(1000, selected, replace=False))
    on = np.zeros(1000, bool)
    on[chosen] = True
    store = open_store(f"faiss:?index={kind}", dim=16, metric="l2")
    store.upsert([str(i) for i in range(1000)], base, [{"on": bool(b)} for b in on])
    store.flush()
    queries = clustered(n_queries, 16, seed=9)
    params = {"ef": 1024} if "HNSW" in kind else None
    got = store.search(queries, 10, filter={"on": True}, params=params)
    scores = brute_force(base[chosen], queries, "l2")
    for hits, row in zip(got, scores, strict=True):
        best = np.argsort(-row, kind="stable")[:10]
        assert hits.ids == [str(j) for j in chosen[best]]
        np.testing.assert_allclose(hits.scores, row[best], rtol=1e-4, atol=1e-4)


def test_hit_metadata_is_the_search_moment_s():
    """Hits read their metadata lazily, from a snapshot: a later write does not reach them."""
    store = open_store("faiss:?index=Flat", dim=4, metric="dot")
    ids = [str(i) for i in range(200)]
    store.upsert(ids, np.tile(np.eye(4), (50, 1)), [{"v": 0} for _ in ids])
    batch = store.search(np.eye(4), 50)  # 200 hits: the batch path
    single = store.search(np.eye(4)[0], 3)[0]  # a few hits, the snapshot already built
    store.upsert(ids, np.tile(np.eye(4), (50, 1)), [{"v": 1} for _ in ids])
    store.delete(ids[:100])
    assert all(m == {"v": 0} for hits in batch for m in hits.metadata)
    assert single.metadata == [{"v": 0}] * 3
    fresh = store.search(np.eye(4)[0], 3)[0]
    assert fresh.metadata == [{"v": 1}] * 3 and not set(fresh.ids) & set(ids[:100])


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_filters_against_the_query_keep_recall_and_k(share):
    """A filter correlated against the queries (they come from clusters it leaves out)
    finds few allowed vectors near them: the ANN search must not return its poor answer."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((20, 32)).astype(np.float32)
    labels = rng.integers(0, 20, 20_000)
    base = centers[labels] + 0.3 * rng.standard_normal((20_000, 32)).astype(np.float32)
    store = open_store("faiss:?index=HNSW16", dim=32, metric="l2")
    store.upsert([str(i) for i in range(20_000)], base, [{"c": int(c)} for c in labels])
    store.flush()
    allowed = labels < int(20 * share)
    queries = centers[int(20 * share) :][rng.integers(0, 20 - int(20 * share), 40)]
    queries = queries + 0.3 * rng.standard_normal(queries.shape).astype(np.float32)
    flt = {"c": {"$lt": int(20 * share)}}
    rows = np.flatnonzero(allowed)
    truth = rows[np.argsort(-brute_force(base[rows], queries, "l2"), axis=1)[:, :10]]
    for got in (
        store.search(queries, 10, filter=flt),
        [store.search(q, 10, filter=flt)[0] for q in queries],
    ):
        assert all(len(g) == 10 for g in got)
        found = np.mean(
            [
                len({int(i) for i in g.ids} & set(t.tolist())) / 10
                for g, t in zip(got, truth, strict=True)
            ]
        )
        assert found >= 0.95


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_single_filtered_queries_on_the_ann_path_keep_the_index_recall(share):
    """A single query over a broad filter runs on the ANN index (not by scoring every
    allowed vector): k hits, all allowed, and recall no worse than unfiltered search."""
    base = clustered(20_000, 32)
    keep = np.random.default_rng(4).random(20_000) < share
    store = open_store("faiss:?index=HNSW16", dim=32)
    store.upsert([str(i) for i in range(20_000)], base, [{"on": bool(b)} for b in keep])
    queries = clustered(40, 32, seed=6)

    def recall(flt, rows):
        truth = rows[np.argsort(-brute_force(base[rows], queries, "cosine"), axis=1)[:, :10]]
        got = [store.search(q, 10, filter=flt)[0] for q in queries]
        assert all(len(g) == 10 and all(keep[int(i)] or not flt for i in g.ids) for g in got)
        return np.mean(
            [len(set(map(int, g.ids)) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]
        )

    assert recall({"on": True}, np.flatnonzero(keep)) >= recall(None, np.arange(20_000)) - 0.02


def test_broad_filter_uses_ann_and_still_returns_k(tmp_path):
    base = clustered(3000, 16)
    meta = [{"half": i % 2 == 0} for i in range(3000)]
    store = open_store("faiss:?index=HNSW8&ef=8", dim=16)
    store.upsert([str(i) for i in range(3000)], base, meta)
    got = store.search(clustered(50, 16, seed=5), 40, filter={"half": True})
    assert all(len(g) == 40 and all(int(h.id) % 2 == 0 for h in g) for g in got)


# -- persistence -------------------------------------------------------------------------------


def saved_store(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index=HNSW16", dim=8, metric="l2")
    store.upsert(["a", "b"], np.eye(8)[:2], [{"k": "v"}, {"n": 1}])
    store.close()
    return path


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_persisted_layout(tmp_path):
    path = saved_store(tmp_path)
    m = manifest(path)
    assert (m["format"], m["dim"], m["metric"], m["index"], m["count"]) == (3, 8, "l2", "HNSW16", 2)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["LOCK", "manifest.json", *(f["file"] for f in m["files"].values())]
    )
    store = open_store(f"faiss:{path}")
    store.upsert(["c"], np.eye(8)[2:3])
    store.close()
    assert manifest(path)["generation"] == 2
    assert not list(path.glob("*.1.*"))  # the previous generation is gone


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p, m: (p / m["files"]["index"]["file"]).write_bytes(b"\0" * 10), "truncated"),
        (
            lambda p, m: (p / m["files"]["metadata"]["file"]).write_text('{"k":"w"}\n{"n":1}\n'),
            "corrupted",
        ),
        (lambda p, m: (p / m["files"]["ids"]["file"]).unlink(), "missing"),
        (lambda p, m: (p / "manifest.json").write_text("{not json"), "unreadable"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "format": 99})), "format"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "dim": 9})), "9-d"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "slots": 3})), "disagree"),
        (lambda p, m: (p / "manifest.json").write_text("[1, 2]"), "not an object"),
        (lambda p, m: (p / "manifest.json").write_text("null"), "not an object"),
        (lambda p, m: (p / "manifest.json").write_bytes(b"\xff\xfe{"), "unreadable"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "dim": "8"})), "dim"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "dim": True})), "dim"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "index": "LSH"})), "kind"),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "index": 5})), "kind"),
        (
            lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "metric": None})),
            "metric",
        ),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "built": "yes"})), "built"),
        (
            lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "generation": -1})),
            "negative",
        ),
        (lambda p, m: (p / "manifest.json").write_text(json.dumps({**m, "files": []})), "files"),
        (
            lambda p, m: (p / "manifest.json").write_text(
                json.dumps({**m, "files": {**m["files"], "ids": {"file": "../../etc/passwd"}}})
            ),
            "not a file of this store",
        ),
        (lambda p, m: (p / m["files"]["ids"]["file"]).write_text('["a", 5]'), "corrupted"),
    ],
)
def test_damaged_files_raise_corrupt_store(tmp_path, damage, message):
    path = saved_store(tmp_path)
    damage(path, manifest(path))
    with pytest.raises(CorruptStore, match=message):
        open_store(f"faiss:{path}")


@pytest.mark.parametrize(
    "data, offsets, message",
    [
        (b"ab", [0, 1, 2, 3], "3 id offsets for 2"),
        (b"a", [0, 2, 1], "go backwards"),
        (b"ab", [0, 1, 3], "disagree with the id bytes"),
        ("é".encode(), [0, 1, 2], "starts inside a character"),
    ],
)
def test_ids_that_make_no_sense_are_corrupt(tmp_path, data, offsets, message):
    """Checksums pass (the manifest is rewritten to match) but the packed ids make no sense."""
    path = saved_store(tmp_path)
    m = manifest(path)
    ids_file = path / m["files"]["ids"]["file"]
    arrays = {"data": np.frombuffer(data, np.uint8), "offsets": np.array(offsets, np.int64)}
    write_arrays(ids_file, arrays, {"slots": 2})
    m["files"]["ids"].update(bytes=ids_file.stat().st_size, crc32=persistence.file_crc32(ids_file))
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptStore, match=message):
        open_store(f"faiss:{path}")


def test_readers_follow_generations_that_writers_commit_meanwhile(tmp_path):
    """Readers opening while another process commits generation after generation always
    get a consistent one: never a raw FileNotFoundError, never a CorruptStore."""
    path = saved_store(tmp_path)
    script = f"""
import numpy as np
from embedrec import open_store
s = open_store("faiss:{path}")
for n in range(60):
    s.upsert([f"w{{n}}"], np.eye(8)[n % 8][None, :] + 0.5)
    s.flush()
s.close()
"""
    writer = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    counts = []
    while writer.poll() is None:
        reader = open_store(f"faiss:{path}")
        counts.append(reader.count())
        assert len(reader.fetch(["a", "b"])) == 2
    assert writer.returncode == 0, writer.stderr.read().decode()
    assert counts == sorted(counts) and len(counts) > 3
    assert open_store(f"faiss:{path}").count() == 62


def test_a_slow_reader_keeps_its_generation_while_writers_commit_newer_ones(tmp_path, monkeypatch):
    """A reader far slower than a writer's commits still reads the generation it started on:
    the writer leaves a generation's files while a reader holds them (they used to be
    removed under it, and the reader gave up after LOAD_ATTEMPTS newer generations)."""
    path = saved_store(tmp_path)
    script = f"""
import sys, numpy as np
from embedrec import open_store
s = open_store("faiss:{path}")
print("open", flush=True)
for n in range(40):
    s.upsert([f"w{{n}}"], np.eye(8)[n % 8][None, :] + 0.5)
    s.flush()
s.close()
"""
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout.readline() == b"open\n"
    read_index = persistence.faiss.read_index

    def slow_read(name: str):  # the writer commits its 40 generations meanwhile
        writer.wait(timeout=120)
        return read_index(name)

    monkeypatch.setattr(persistence.faiss, "read_index", slow_read)
    reader = open_store(f"faiss:{path}")
    assert writer.returncode == 0, writer.stderr.read().decode()
    assert reader.count() == 2 and len(reader.fetch(["a", "b"])) == 2
    monkeypatch.setattr(persistence.faiss, "read_index", read_index)
    assert open_store(f"faiss:{path}").count() == 42


def _full_disk(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_at_manifest(tmp: Path, final: Path) -> None:
    if final.name == "manifest.json":
        _full_disk()
    persistence.os.replace(tmp, final)


@pytest.mark.parametrize(
    "target, fail",
    [
        ("embedrec.stores.faiss.persistence.faiss.write_index", _full_disk),
        ("embedrec.stores.faiss.persistence.fsync_rename", _full_disk),
        ("embedrec.stores.faiss.persistence.fsync_rename", _full_at_manifest),
    ],
)
def test_full_disk_keeps_previous_generation_and_the_store_writable(
    tmp_path, monkeypatch, target, fail
):
    path = saved_store(tmp_path)
    before = sorted(p.name for p in path.iterdir())
    store = open_store(f"faiss:{path}")
    store.upsert(["c"], np.eye(8)[2:3])
    monkeypatch.setattr(target, fail)
    with pytest.raises(StoreWriteError, match="No space left on device"):
        store.flush()
    monkeypatch.undo()
    assert sorted(p.name for p in path.iterdir()) == before  # nothing half-written is left
    reader = open_store(f"faiss:{path}")
    assert reader.count() == 2 and reader.fetch(["c"]) == []
    store.upsert(["d"], np.eye(8)[3:4])  # still writable: the next save takes it all
    store.close()
    assert open_store(f"faiss:{path}").count() == 4


def test_first_save_failing_leaves_the_directory_re_creatable(tmp_path, monkeypatch):
    path = tmp_path / "new"
    store = open_store(f"faiss:{path}?index=Flat", dim=4)
    store.upsert(["a"], np.ones((1, 4)))
    monkeypatch.setattr("embedrec.stores.faiss.persistence.fsync_rename", _full_disk)
    with pytest.raises(StoreWriteError):
        store.close()
    monkeypatch.undo()
    with pytest.raises(StoreNotFound):
        open_store(f"faiss:{path}")
    store.close()  # the retry succeeds
    assert open_store(f"faiss:{path}").count() == 1
    other = tmp_path / "other"
    s2 = open_store(f"faiss:{other}?index=Flat", dim=4)
    s2.upsert(["a"], np.ones((1, 4)))
    monkeypatch.setattr("embedrec.stores.faiss.persistence.fsync_rename", _full_disk)
    with pytest.raises(StoreWriteError):
        s2.flush()
    monkeypatch.undo()
    s2._lock_file.close()  # the process dies holding nothing committed
    again = open_store(f"faiss:{other}?index=Flat", dim=4)  # the directory is not foreign
    again.upsert(["b"], np.ones((1, 4)))
    again.close()
    assert open_store(f"faiss:{other}").fetch(["b"])[0].id == "b"


def test_killed_writer_leaves_a_readable_store(tmp_path):
    """A process killed in the middle of saving (here: right after the index file) leaves
    the previous generation readable."""
    path = saved_store(tmp_path)
    script = f"""
import os, numpy as np
import embedrec.stores.faiss.persistence as f
from embedrec import open_store
real = f.fsync_rename
def dying(tmp, final):
    real(tmp, final)
    if final.name.startswith("index."):
        os._exit(9)
f.fsync_rename = dying
s = open_store("faiss:{path}")
s.upsert(["c"], np.eye(8)[2:3])
s.flush()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()
    store = open_store(f"faiss:{path}")
    assert store.count() == 2
    store.upsert(["c"], np.eye(8)[2:3])
    store.close()
    assert open_store(f"faiss:{path}").count() == 3


def test_second_writer_is_refused(tmp_path):
    path = saved_store(tmp_path)
    first = open_store(f"faiss:{path}")
    first.upsert(["c"], np.eye(8)[2:3])
    reader = open_store(f"faiss:{path}")
    assert reader.count() == 2  # readers never lock
    with pytest.raises(StoreLocked, match="another process"):
        reader.upsert(["d"], np.eye(8)[3:4])
    first.close()
    with pytest.raises(StoreLocked, match="after this handle opened it"):
        reader.upsert(["d"], np.eye(8)[3:4])  # it would save a state without "c"
    again = open_store(f"faiss:{path}")
    again.upsert(["d"], np.eye(8)[3:4])
    again.close()
    assert open_store(f"faiss:{path}").count() == 4


# -- opening ---------------------------------------------------------------------------------


def test_open_missing_store_without_dim(tmp_path):
    with pytest.raises(StoreNotFound, match="pass dim"):
        open_store(f"faiss:{tmp_path}/nothing")


def test_open_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        open_store(f"faiss:{tmp_path}", dim=8)


@pytest.mark.parametrize(
    "uri, match",
    [
        ("faiss:?index=LSH", "unknown FAISS index kind"),
        ("faiss:?metric=hamming", "unknown metric"),
        ("faiss:?ef=lots", "not an integer"),
        ("faiss:?colour=blue", "unknown option"),
        ("faiss:?index=IVF,PQ7", "divisible"),
        ("milvus://x", "unknown store scheme"),
        ("pinecone://idx?api_key=s3cret", "secrets come from the environment"),
        ("qdrant://user:pw@localhost:6333/c", "credentials"),
        ("no-scheme", "not a store URI"),
    ],
)
def test_bad_uris(uri, match):
    with pytest.raises(ConfigError, match=match) as info:
        open_store(uri, dim=8)
    assert "s3cret" not in str(info.value) and "pw@" not in str(info.value)


def test_filter_cache_tells_true_from_1_and_forgets_on_write():
    store = open_store("faiss:?index=HNSW16", dim=8)
    store.upsert(["a", "b"], np.eye(8)[:2], [{"f": True}, {"f": 1}])
    assert store.count({"f": 1}) == 1
    assert [h.id for h in store.search(np.ones(8), 5, filter={"f": True})[0]] == ["a"]
    store.upsert(["c"], np.eye(8)[2:3], [{"f": 1}])
    assert store.count({"f": 1}) == 2
    store.delete(filter={"f": 1})
    assert store.count({"f": 1}) == 0 and store.count() == 1


def test_excluded_slots_follow_writes():
    """The per-frozenset slot cache must not outlive a write that moves an id."""
    store = open_store("faiss:?index=Flat", dim=4, metric="dot")
    store.upsert(["a", "b", "c"], np.eye(4)[:3])
    seen = frozenset({"a"})
    query = np.ones(4, dtype=np.float32)
    assert "a" not in {h.id for h in store.search(query, 3, exclude=[seen])[0]}
    store.delete(["b"])
    store.upsert(["a"], np.eye(4)[3:4] * 5)  # "a" moves to a new slot
    store.flush()
    hits = store.search(query, 3, exclude=[seen])[0]
    assert [h.id for h in hits] == ["c"]


@pytest.mark.parametrize("kind", ["Flat", "HNSW16"])
def test_hit_ids_follow_appends_overwrites_deletes_and_compaction(kind):
    """Hits decode ids from packed bytes that appends extend in place (with room) rather
    than make again."""
    store = open_store(f"faiss:?index={kind}", dim=8, metric="l2")
    basis = np.eye(8, dtype=np.float32)

    def top(vector: np.ndarray) -> list[str]:
        single = store.search(vector, 3)[0].ids
        assert store.search(np.stack([vector, vector]), 3)[1].ids == single  # batch path
        return single

    store.upsert(["a", "b", "c"], basis[:3])
    assert top(basis[0])[0] == "a"
    store.upsert(["d"], basis[3:4])
    assert top(basis[3])[0] == "d"
    room = store._table.ids._data  # grown with room to spare
    store.upsert(["a"], basis[4:5])  # overwritten: its old slot is dead
    assert top(basis[4])[0] == "a" and top(basis[0]).count("a") == 0
    assert store._table.ids._data is room  # extended in place, not made again
    store.delete(["b"])
    assert "b" not in top(basis[1])
    store.upsert([f"n{i}" for i in range(20)], np.tile(basis[5], (20, 1)) * 2)
    assert top(basis[5] * 2)[0].startswith("n")
    store.compact()
    assert top(basis[4])[0] == "a" and top(basis[3])[0] == "d"
    assert sorted(store.ids()) == sorted(["a", "c", "d", *(f"n{i}" for i in range(20))])


@pytest.mark.parametrize("rows", [3, 40, 600])  # row by row, shared, each row its own read
def test_hits_read_each_rows_metadata_from_one_answer(rows):
    """Rows padded with -1 (a filter that allows fewer than k) and full ones: each row's
    metadata is its own hits', whichever row is read first."""
    from embedrec.stores.faiss.hits import hits_of

    store = open_store("faiss:", dim=4, metric="l2")
    store.upsert(
        [f"r{i}" for i in range(30)], np.eye(4)[np.arange(30) % 4], [{"n": i} for i in range(30)]
    )
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 30, (rows, 10))
    labels[::3, 6:] = -1
    hits = hits_of(store._table, rng.random((rows, 10), dtype=np.float32), labels, l2=True)
    for n in [rows - 1, *range(rows)]:
        kept = labels[n][labels[n] >= 0]
        assert hits[n].ids == [f"r{s}" for s in kept]
        assert hits[n].metadata == [{"n": int(s)} for s in kept]
