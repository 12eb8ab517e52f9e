"""`embedrec ingest --rebuild` carries the catalogue events of the alias's live generation
(`LiveEdits`) into the new generation: an item an event added is copied with its stored
vector, one it removed stays out, unless the catalogue's row changed since (the catalogue is
newer then); the edits follow the alias, so the next plain ingest neither redoes nor undoes
them."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from embedrec.cli import main
from embedrec.ingestion.manifest import LiveEdits
from embedrec.stores import open_existing
from embedrec.stores.lifecycle import generations as points
from tests.ingestion.test_rebuild import ROWS, HashEmbedder, ingest_argv, work

__all__ = ["work"]


def test_a_rebuild_keeps_the_catalogue_events(work: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"faiss:{work / 'store'}?index=Flat"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    added = HashEmbedder("old").embed(["an item only an event added"])
    with open_existing(uri) as store:  # what the catalogue writer does, on g0001
        store.upsert(["new1"], added, [{"shelf": 3}])
        store.delete(["5", "7"])
        store.flush()
        with closing(LiveEdits.of(store.uri)) as edits:
            edits.record([("new1", "added"), ("5", "removed"), ("7", "removed")])
    catalogue = work / "items.csv"
    catalogue.write_text(catalogue.read_text().replace("7,item number 7,", "7,item 7 recut,"))

    capsys.readouterr()
    assert main(ingest_argv(work, uri, "old", "--rebuild", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["live"] == "g0002" and report["swapped"] and report["events_carried"] == 2
    assert report["count"] == report["expected"] == ROWS  # 300 - "5" + "new1"
    with open_existing(uri) as store:
        got = {r.id: r for r in store.fetch(["new1", "5", "7"])}
        assert set(got) == {"new1", "7"}  # "7": its row changed after the event
        assert np.allclose(got["new1"].vector, added[0], atol=1e-6)
        assert got["new1"].metadata == {"shelf": 3}
        with closing(LiveEdits.of(store.uri)) as edits:
            assert edits.all() == {"new1": "added", "5": "removed"}

    assert main(ingest_argv(work, uri, "old", "--json")) == 0  # into g0002: nothing to do
    again = json.loads(capsys.readouterr().out)
    assert again["upserted"] == 0
    with open_existing(uri) as store:
        assert store.count() == ROWS and [r.id for r in store.fetch(["new1", "5"])] == ["new1"]


def test_a_rebuild_with_another_model_carries_only_the_removals(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"faiss:{work / 'store'}?index=Flat"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    with open_existing(uri) as store:
        store.upsert(["new1"], HashEmbedder("old").embed(["added"]), [{"shelf": 3}])
        store.delete(["5"])
        store.flush()
        with closing(LiveEdits.of(store.uri)) as edits:
            edits.record([("new1", "added"), ("5", "removed")])
    capsys.readouterr()
    assert main(ingest_argv(work, uri, "new", "--rebuild", "--json")) == 0
    out, err = capsys.readouterr()
    assert "not carried into g0002: they were embedded by another model" in err
    assert json.loads(out)["events_carried"] == 1
    with open_existing(uri) as store:
        assert store.count() == ROWS - 1 and store.fetch(["new1", "5"]) == []


def test_events_applied_during_a_rebuild_reach_the_new_generation(
    work: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer keeps writing the live generation while a rebuild validates the new
    one: what it applied between the rebuild's first replay and its swap is carried too."""
    uri = f"faiss:{work / 'store'}?index=Flat"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    added = HashEmbedder("old").embed(["an item an event added mid-rebuild"])

    def reached(point: str) -> None:
        if point == "rebuild:validated":  # after the replay and validation, before the swap
            with open_existing(f"faiss:{work / 'store'}/g0001") as store:
                store.upsert(["late1"], added, [{"shelf": 4}])
                store.delete(["9"])
                store.flush()
                with closing(LiveEdits.of(store.uri)) as edits:
                    edits.record([("late1", "added"), ("9", "removed")])

    monkeypatch.setattr(points, "reached", reached)
    capsys.readouterr()
    assert main(ingest_argv(work, uri, "old", "--rebuild", "--json")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["live"] == "g0002" and json.loads(out)["events_carried"] == 2
    assert "carried 2 catalogue event edit(s) applied to g0001 during the rebuild" in err
    with open_existing(uri) as store:
        got = store.fetch(["late1", "9"])
        assert [r.id for r in got] == ["late1"] and got[0].metadata == {"shelf": 4}
        assert np.allclose(got[0].vector, added[0], atol=1e-6)
        assert store.count() == ROWS
        with closing(LiveEdits.of(store.uri)) as edits:
            assert edits.all() == {"late1": "added", "9": "removed"}
