"""A batch ingest after catalogue events (embedrec.retrieval.live, which records them as
`LiveEdits`): it neither redoes nor undoes them while the catalogue's rows stay as they were,
and takes a row that changed after them (the catalogue is newer then)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from embedrec.embedders import get_embedder
from embedrec.ingestion.manifest import LiveEdits
from embedrec.stores import open_store
from tests.ingestion.test_pipeline import catalog, movies, run

__all__ = ["cache_dir"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def text_embedder():
    return get_embedder("text", device="cpu")


def _apply_events(uri: str, embedder) -> None:
    """What the catalogue writer does: an item added, one changed, two removed, recorded."""
    with open_store(uri) as store:
        vectors = embedder.embed(["A new film: Drama", "Movie number 3, recut: Comedy"])
        store.upsert(["new1"], vectors[:1], [{"title": "A new film", "year": 2026}])
        store.upsert(["m3"], vectors[1:], [{"title": "recut", "year": 2026}])
        store.delete(["m5", "m6"])
        store.flush()
        with closing(LiveEdits.of(store.uri)) as edits:
            edits.record([("new1", "added"), ("m3", "changed"), ("m5", "removed"),
                          ("m6", "removed")])  # fmt: skip


def test_ingest_keeps_catalogue_events(tmp_path: Path, text_embedder) -> None:
    rows = movies(20)
    path = catalog(tmp_path / "items.csv", rows)
    uri = f"faiss:{tmp_path / 'store'}?index=Flat"
    run(path, uri, text_embedder)
    _apply_events(uri, text_embedder)
    again = run(path, uri, text_embedder, sync=True)
    assert (again.upserted, again.deleted, again.unchanged) == (0, 0, 20)
    with open_store(uri) as store:
        assert store.count() == 19  # 20 - 2 removed + 1 added
        assert {r.id: r.metadata["title"] for r in store.fetch(["new1", "m3", "m5", "m6"])} == {
            "new1": "A new film", "m3": "recut",
        }  # fmt: skip
    rows["m3"] = ("Movie number 3 in the catalogue's new cut", 1953, "Drama")
    rows["m5"] = ("Movie number 5 is back", 1955, "Drama")
    path = catalog(path, rows)
    newer = run(path, uri, text_embedder)
    assert newer.upserted == 2
    with open_store(uri) as store:
        got = {r.id: r.metadata["title"] for r in store.fetch(["m3", "m5", "m6"])}
        assert got == {"m3": rows["m3"][0], "m5": rows["m5"][0]}  # m6: still removed
    with open_store(uri) as store, closing(LiveEdits.of(store.uri)) as edits:
        assert edits.ops(["new1", "m3", "m5", "m6"]) == {"new1": "added", "m6": "removed"}
