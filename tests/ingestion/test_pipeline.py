"""The ingestion pipeline with real parts: MiniLM text embeddings into a FAISS store on disk."""

from __future__ import annotations

import gc
import io
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedrec.embedders import get_embedder
from embedrec.ingestion import manifest as manifest_module
from embedrec.ingestion import pipeline
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.manifest import IngestManifest, manifest_path, store_key
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.ingestion.store_info import embedder_for, store_info
from embedrec.ingestion.summary import IngestOptions, IngestSummary, TooManyRejects
from embedrec.stores import EmbedderMismatch, StoreInfo, open_store

GENRES = ["Drama", "Comedy", "Action", "Horror", "Romance"]
COLUMNS = ColumnMap(
    id="item_id",
    text="{title}: {genres}",
    metadata=parse_metadata_spec("title,year:int,genres:list"),
)


@pytest.fixture(scope="module")
def text_embedder():
    return get_embedder("text", device="cpu")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def catalog(path: Path, rows: dict[str, tuple[str, int, str]]) -> Path:
    lines = ["item_id,title,year,genres"]
    lines += [f"{rid},{title},{year},{genres}" for rid, (title, year, genres) in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def movies(n: int) -> dict[str, tuple[str, int, str]]:
    return {
        f"m{i}": (f"Movie number {i}", 1950 + i, f"{GENRES[i % 5]}|{GENRES[(i + 2) % 5]}")
        for i in range(n)
    }


def run(path: Path, uri: str, embedder, **options) -> IngestSummary:
    options.setdefault("batch_size", 16)
    return ingest(Source(path, COLUMNS), uri, "text", IngestOptions(**options), embedder=embedder)


def counts(s: IngestSummary) -> dict[str, int]:
    keys = ("rows_read", "unchanged", "embedded", "cache_hits", "upserted", "rejected", "deleted")
    return {k: getattr(s, k) for k in keys}


def test_first_run_then_an_unchanged_rerun_does_nothing(tmp_path: Path, text_embedder) -> None:
    path = catalog(tmp_path / "items.csv", movies(40))
    uri = f"faiss:{tmp_path / 'store'}?index=HNSW32"
    first = run(path, uri, text_embedder)
    assert counts(first) == {
        "rows_read": 40, "unchanged": 0, "embedded": 40, "cache_hits": 0,
        "upserted": 40, "rejected": 0, "deleted": 0,
    }  # fmt: skip
    store_manifest = (tmp_path / "store" / "manifest.json").read_text()
    with open_store(uri) as store:
        assert store.count() == 40
        (rec,) = store.fetch(["m7"])
        assert rec.metadata == {
            "title": "Movie number 7",
            "year": 1957,
            "genres": ["Action", "Romance"],
        }
        expected = text_embedder.embed(["Movie number 7: Action|Romance"])[0]
        np.testing.assert_allclose(rec.vector, expected, atol=1e-5)
    second = run(path, uri, text_embedder)
    assert counts(second) == {
        "rows_read": 40, "unchanged": 40, "embedded": 0, "cache_hits": 0,
        "upserted": 0, "rejected": 0, "deleted": 0,
    }  # fmt: skip
    # the store was not even rewritten
    assert (tmp_path / "store" / "manifest.json").read_text() == store_manifest


def test_sync_refuses_when_a_rejected_row_hides_its_id(tmp_path: Path, text_embedder) -> None:
    path = catalog(tmp_path / "items.csv", movies(3))
    uri = f"faiss:{tmp_path / 'store'}"
    run(path, uri, text_embedder)
    lines = path.read_text().splitlines()
    lines[2] += ",an extra field"  # m1's row: no longer readable, its id unknown
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"--sync deleted nothing: 1 rejected row"):
        run(path, uri, text_embedder, sync=True)
    with open_store(uri) as store:
        assert store.count() == 3 and store.fetch(["m1"])[0].id == "m1"


def test_changed_rows_are_reembedded_and_sync_deletes_what_left(
    tmp_path: Path, text_embedder
) -> None:
    rows = movies(30)
    path = catalog(tmp_path / "items.csv", rows)
    uri = f"faiss:{tmp_path / 'store'}"
    run(path, uri, text_embedder)
    rows["m1"] = ("A brand new title", 1951, rows["m1"][2])  # text changed: embedded again
    rows["m2"] = (rows["m2"][0], 2020, rows["m2"][2])  # metadata only: the cache answers
    for gone in ("m3", "m4", "m5"):
        del rows[gone]
    rows["m99"] = ("A late addition", 2001, "Drama")
    catalog(path, rows)
    second = run(path, uri, text_embedder)
    assert counts(second) | {"rows_read": 0} == {
        "rows_read": 0, "unchanged": 25, "embedded": 2, "cache_hits": 1,
        "upserted": 3, "rejected": 0, "deleted": 0,
    }  # fmt: skip
    with open_store(uri) as store:
        assert store.count() == 31  # without --sync, rows that left stay in the store
        assert store.fetch(["m2"])[0].metadata["year"] == 2020
        vec = store.fetch(["m1"])[0].vector
        np.testing.assert_allclose(
            vec, text_embedder.embed(["A brand new title: Comedy|Horror"])[0], atol=1e-5
        )
    third = run(path, uri, text_embedder, sync=True)
    assert (third.deleted, third.upserted, third.embedded) == (3, 0, 0)
    with open_store(uri) as store:
        assert store.count() == 28
        assert store.fetch(["m3", "m4", "m5"]) == []
    assert run(path, uri, text_embedder, sync=True).deleted == 0


def test_bad_rows_go_to_the_rejects_file_and_good_rows_land(tmp_path: Path, text_embedder) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,year,genres\n"
        "a,Good one,1990,Drama\n"
        "b,,1991,\n"  # empty text
        "c,Bad year,19x1,Drama\n"
        "a,Duplicate,1992,Drama\n"
        "d,Good two,,Comedy\n"
    )
    rejects = tmp_path / "out" / "rejects.jsonl"
    summary = run(path, f"faiss:{tmp_path / 'store'}", text_embedder, rejects=rejects)
    assert (summary.rows_read, summary.upserted, summary.rejected) == (5, 2, 3)
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["row"], r["id"], r["field"]) for r in lines] == [
        (3, "b", "title, genres"),
        (4, "c", "year"),
        (5, "a", "item_id"),
    ]
    assert all(r["file"] == str(path) and r["reason"] for r in lines)
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        assert sorted(r.id for r in store.fetch(["a", "b", "c", "d"])) == ["a", "d"]
    # a clean rerun empties the rejects file of the previous run
    catalog(path, {"a": ("Good one", 1990, "Drama")})
    again = run(path, f"faiss:{tmp_path / 'store'}", text_embedder, rejects=rejects)
    assert again.rejected == 0 and not rejects.exists()


def test_max_rejects_aborts_and_keeps_what_landed(tmp_path: Path, text_embedder) -> None:
    rows = movies(48)
    path = catalog(tmp_path / "items.csv", rows)
    text = path.read_text().splitlines()
    for line in (34, 38, 42):  # rows 34.. are in the third batch of 16
        text[line] = text[line].replace(",19", ",x19")
    path.write_text("\n".join(text) + "\n")
    uri = f"faiss:{tmp_path / 'store'}"
    with pytest.raises(TooManyRejects, match="limit 2") as err:
        run(path, uri, text_embedder, max_rejects=2, checkpoint_seconds=3600)
    landed = err.value.summary.upserted
    assert landed == 32 and err.value.summary.rejected == 3
    with open_store(uri) as store:
        assert store.count() == 32
    assert IngestManifest(manifest_path(path, uri)).count() == 32
    catalog(path, rows)  # fixed: the rerun does only the rest
    resumed = run(path, uri, text_embedder, max_rejects=2)
    assert (resumed.unchanged, resumed.embedded, resumed.upserted) == (32, 16, 16)
    with open_store(uri) as store:
        assert store.count() == 48


def test_a_lost_store_is_rebuilt_from_the_cache(tmp_path: Path, text_embedder) -> None:
    path = catalog(tmp_path / "items.csv", movies(20))
    uri = f"faiss:{tmp_path / 'store'}"
    run(path, uri, text_embedder)
    with open_store(uri) as store:
        store.delete(["m0", "m1"])
    again = run(path, uri, text_embedder)  # the manifest is reconciled with the store
    assert (again.unchanged, again.upserted, again.embedded, again.cache_hits) == (18, 2, 0, 2)
    for child in (tmp_path / "store").iterdir():
        child.unlink()
    (tmp_path / "store").rmdir()
    rebuilt = run(path, uri, text_embedder)
    assert (rebuilt.upserted, rebuilt.embedded, rebuilt.cache_hits) == (20, 0, 20)
    memory = run(path, "faiss:", text_embedder)  # nothing persists: everything goes in
    assert memory.upserted == 20


def test_the_store_records_its_embedder(tmp_path: Path, text_embedder, cache_dir: Path) -> None:
    path = catalog(tmp_path / "items.csv", movies(3))
    run(path, f"faiss:{tmp_path / 'store'}?index=HNSW32", text_embedder)
    assert not (cache_dir / "stores").exists()  # kept in the store, not in the cache
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        assert store.info == StoreInfo("text", text_embedder.name, 384, "text", "cosine")
    assert store_key("pinecone://movies?namespace=a") != store_key("pinecone://movies?namespace=b")


def test_another_embedder_may_not_write_the_store(tmp_path: Path, text_embedder) -> None:
    path = catalog(tmp_path / "items.csv", movies(3))
    uri = f"faiss:{tmp_path / 'store'}"
    run(path, uri, text_embedder)
    other = type("Other", (), {"name": "text:another-model", "dim": 384, "modality": "text"})()
    catalog(tmp_path / "items.csv", movies(4))
    with pytest.raises(EmbedderMismatch, match=r"by embedder 'text' .*not 'text' .*another-model"):
        run(path, uri, other)  # the same spec, another model: the fingerprint decides
    with open_store(uri) as store:
        assert store.count() == 3


def test_a_store_older_than_store_info_opens_and_is_upgraded(
    tmp_path: Path, text_embedder, cache_dir: Path
) -> None:
    path = catalog(tmp_path / "items.csv", movies(3))
    uri = f"faiss:{tmp_path / 'store'}"
    run(path, uri, text_embedder)
    manifest = tmp_path / "store" / "manifest.json"
    raw = json.loads(manifest.read_text())
    del raw["info"]  # as the previous version wrote it, with the embedder in the cache
    manifest.write_text(json.dumps(raw))
    legacy = {"store": store_key(uri), "embedder": "text", "name": text_embedder.name}
    record = cache_dir / "stores" / "legacy.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(legacy | {"dim": 384, "modality": "text"}))
    record.rename(manifest_module.embedder_record_path(uri))
    with open_store(uri) as store:
        assert store.info is None
        assert store_info(store) == StoreInfo("text", text_embedder.name, 384, "text", "cosine")
        assert embedder_for(store).name == text_embedder.name
    catalog(tmp_path / "items.csv", movies(4))
    assert run(path, uri, text_embedder).upserted == 1
    with open_store(uri) as store:
        assert store.info == StoreInfo("text", text_embedder.name, 384, "text", "cosine")


def test_modality_mismatch_is_refused(tmp_path: Path, text_embedder) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,image\na,x.png\n")
    with pytest.raises(ValueError, match="takes text input"):
        ingest(Source(path, ColumnMap(id="id", image="image")), "faiss:", embedder=text_embedder)


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_images_with_a_corrupt_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = tmp_path / "items.csv"
    path.write_text(
        "id,image,category\np0,img/0.png,Bag\np1,img/1.png,Coat\nbad,img/bad.png,Bag\n"
        "gone,img/gone.png,Bag\np2,img/2.png,Bag\n"
    )
    cols = ColumnMap(id="id", image="image", metadata=parse_metadata_spec("category"))
    uri = f"faiss:{tmp_path / 'store'}"
    rejects = tmp_path / "rejects.jsonl"
    summary = ingest(Source(path, cols), uri, "image", IngestOptions(batch_size=4, rejects=rejects))
    assert (summary.upserted, summary.rejected) == (3, 2)
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((r["row"], r["id"], r["field"]) for r in lines) == [
        (4, "bad", "image"),
        (5, "gone", "image"),
    ]
    with open_store(uri) as store:
        assert store.dim == 1280 and store.count() == 3
        assert store.fetch(["p1"])[0].metadata == {"category": "Coat"}
    assert run_again_is_noop(path, cols, uri)


def run_again_is_noop(path: Path, cols: ColumnMap, uri: str) -> bool:
    summary = ingest(Source(path, cols), uri, "image", IngestOptions(batch_size=4))
    return (summary.unchanged, summary.embedded, summary.upserted) == (3, 0, 0)


def test_manifest_round_trip(tmp_path: Path) -> None:
    book = IngestManifest(tmp_path / "m.sqlite")
    book.commit([("a", "1"), ("b", "2")], {"store": "faiss:x"})
    book.commit([("b", "3")])
    assert book.hashes(["a", "b", "c"]) == {"a": "1", "b": "3"}
    book.remove(["a"])
    assert list(book.ids()) == ["b"] and book.count() == 1
    book.close()
    assert IngestManifest(tmp_path / "m.sqlite").hashes(["b"]) == {"b": "3"}


def test_the_manifest_is_looked_up_only_when_it_held_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that starts with an empty manifest reads no hash back (its ids are unique in
    the catalog, and only its own checkpoints add to the manifest), yet writes every row;
    a run that starts with ids in it looks each row up."""
    asked: list[int] = []
    hashes = IngestManifest.hashes
    monkeypatch.setattr(
        IngestManifest, "hashes", lambda self, ids: asked.append(len(ids)) or hashes(self, ids)
    )
    path = catalog(tmp_path / "items.csv", movies(40))
    uri = f"faiss:{tmp_path / 'store'}"
    options = IngestOptions(batch_size=16, checkpoint_seconds=0)  # a checkpoint every batch
    hashed = get_embedder("hash:16")
    first = ingest(Source(path, COLUMNS), uri, "hash:16", options, embedder=hashed)
    assert (first.upserted, asked) == (40, [])
    again = ingest(Source(path, COLUMNS), uri, "hash:16", options, embedder=hashed)
    assert (again.unchanged, again.upserted, sum(asked)) == (40, 0, 40)
    book = manifest_path(path, uri)  # the store is kept, its manifest lost: all written again
    for file in (book, book.with_name(book.name + "-wal"), book.with_name(book.name + "-shm")):
        file.unlink(missing_ok=True)
    asked.clear()
    rerun = ingest(Source(path, COLUMNS), uri, "hash:16", options, embedder=hashed)
    assert (rerun.upserted, rerun.cache_hits, asked) == (40, 40, [])
    with open_store(uri) as store:
        assert store.count() == 40


def test_new_vectors_reach_the_cache_in_bulk(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache gets a segment per CACHE_BULK new vectors (and one for the rest at the
    end), not a write per batch; a rerun into a lost store embeds nothing."""
    monkeypatch.setattr(pipeline.run, "CACHE_BULK", 64)
    path = catalog(tmp_path / "items.csv", movies(300))
    source, uri = Source(path, COLUMNS), f"faiss:{tmp_path / 'store'}"
    first = ingest(source, uri, "hash:8", IngestOptions(batch_size=16))
    assert (first.embedded, first.upserted) == (300, 300)
    with sqlite3.connect(cache_dir / "embeddings" / "embeddings.sqlite3") as db:
        sizes = [n for (n,) in db.execute("SELECT length(keys) / 32 FROM segments ORDER BY id")]
    assert sum(sizes) == 300 and len(sizes) <= 300 // 64 + 1 and min(sizes[:-1]) >= 64
    shutil.rmtree(tmp_path / "store")
    again = ingest(source, uri, "hash:8", IngestOptions(batch_size=16))
    assert (again.embedded, again.cache_hits, again.upserted) == (0, 300, 300)


def test_the_collector_is_put_back_after_an_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an ingest runs, the garbage collector runs less often (pipeline.GC_YOUNG) and
    leaves out what existed before (frozen); after it, whether it ended or failed, the
    collector is as it was."""
    before = (gc.get_threshold(), gc.get_freeze_count())
    during: list[tuple[int, bool]] = []
    real_run = pipeline._Run.run

    def spy(self: pipeline._Run) -> None:
        during.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
        real_run(self)

    monkeypatch.setattr(pipeline._Run, "run", spy)
    path = catalog(tmp_path / "items.csv", movies(20))
    uri = f"faiss:{tmp_path / 'store'}"
    ingest(Source(path, COLUMNS), uri, "hash:8", IngestOptions(batch_size=8))
    assert during == [(pipeline.GC_YOUNG, True)]
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    with pytest.raises(EmbedderMismatch):  # fails inside the run: put back all the same
        ingest(Source(path, COLUMNS), uri, "hash:16", IngestOptions(batch_size=8))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
