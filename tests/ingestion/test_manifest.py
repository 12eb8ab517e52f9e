"""The ingest manifest's storage: segments of packed entries (string_blobs.py), read back
by other connections and processes, merged, removed from, migrated from the old table, and
left whole by a process killed mid-commit."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedrec.ingestion import manifest
from embedrec.ingestion.manifest import (
    IngestManifest,
    ingested_catalog,
    manifest_path,
    read_manifest,
)

ODD_IDS = ["plain", "é accent", "日本語", "emoji 🎬", "with\0nul", "\0", "", " spaced ", "x" * 500]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def segment_rows(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, base, n FROM segments ORDER BY id").fetchall()


def test_a_value_no_file_takes_is_refused_by_name(tmp_path: Path) -> None:
    book = IngestManifest(tmp_path / "m.sqlite")
    with pytest.raises(ValueError, match=r"id 'bad\\udce9' is not valid Unicode"):
        book.commit([("ok", "h"), ("bad\udce9", "h")])
    with pytest.raises(ValueError, match="hash at position 1 is int 7, not str"):
        book.commit([("a", "h"), ("b", 7)])  # type: ignore[list-item]
    assert book.count() == 0
    book.close()


def test_unicode_and_nul_ids_round_trip(tmp_path: Path) -> None:
    book = IngestManifest(tmp_path / "m.sqlite")
    book.commit([(i, digest(i)) for i in ODD_IDS], {"store": "faiss:x"})
    book.close()
    again = IngestManifest(tmp_path / "m.sqlite")
    assert again.hashes([*ODD_IDS, "with"]) == {i: digest(i) for i in ODD_IDS}
    assert list(again.ids()) == ODD_IDS
    again.close()


def test_a_later_commit_wins_and_ids_keep_their_first_place(tmp_path: Path) -> None:
    book = IngestManifest(tmp_path / "m.sqlite")
    book.commit([("b", "1"), ("a", "1"), ("a", "2")])
    assert book.hashes(["a", "b"]) == {"a": "2", "b": "1"}
    book.commit([("c", "1"), ("b", "3")])
    assert list(book.ids()) == ["b", "a", "c"] and book.count() == 3
    assert book.hashes(["a", "b", "c", "d"]) == {"a": "2", "b": "3", "c": "1"}
    book.close()


def test_another_connection_sees_commits_removals_and_clears(tmp_path: Path) -> None:
    one, two = IngestManifest(tmp_path / "m.sqlite"), IngestManifest(tmp_path / "m.sqlite")
    one.commit([("a", "1"), ("b", "1")])
    assert two.hashes(["a", "b"]) == {"a": "1", "b": "1"}
    two.commit([("b", "2"), ("c", "2")])
    assert one.hashes(["a", "b", "c"]) == {"a": "1", "b": "2", "c": "2"}
    one.remove(["a", "zz"])
    assert two.hashes(["a", "b", "c"]) == {"b": "2", "c": "2"} and two.count() == 2
    two.clear()
    assert one.count() == 0 and one.hashes(["b"]) == {}
    one.commit([("d", "3")])
    assert two.hashes(["b", "d"]) == {"d": "3"}
    one.close()
    two.close()


def test_segments_merge_and_removal_works_after(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    book, reader = IngestManifest(path), IngestManifest(path)
    expected: dict[str, str] = {}
    for k in range(60):  # ids repeat across commits: each merge keeps the newest hash
        batch = [(f"id{(k * 7 + j) % 150}", digest(f"{k}/{j}")) for j in range(10)]
        book.commit(batch)
        expected |= dict(batch)
        if k % 9 == 0:
            assert reader.hashes(list(expected)) == expected
    rows = segment_rows(path)
    assert len(rows) <= manifest.MERGE_AFTER + 1
    assert sum(n for _, _, n in rows) < 600  # replaced hashes were dropped
    assert book.hashes(list(expected)) == expected == reader.hashes(list(expected))
    gone = [f"id{i}" for i in range(0, 150, 3)]
    book.remove(gone)
    left = {i: h for i, h in expected.items() if i not in gone}
    assert reader.hashes(list(expected)) == left and reader.count() == len(left)
    assert [(base, n) for _, base, n in segment_rows(path)] == [(1, len(left))]
    assert IngestManifest(path).hashes(list(expected)) == left
    book.close()
    reader.close()


@pytest.mark.parametrize("repeat", [False, True])
def test_a_reader_behind_a_removal_and_the_merges_after_it_forgets_the_ids(
    tmp_path: Path, repeat: bool
) -> None:
    """Merged with the segments after it, the base a removal wrote still tells a reader
    that had not seen it to start over (with ids repeated or not: both ways of merging)."""
    path = tmp_path / "m.sqlite"
    book, reader = IngestManifest(path), IngestManifest(path)
    book.commit([("gone", "1"), ("kept", "1")])
    assert reader.hashes(["gone", "kept"]) == {"gone": "1", "kept": "1"}
    book.remove(["gone"])
    for k in range(2 * manifest.MERGE_AFTER):
        book.commit([(f"id{k % 3 if repeat else k}", digest(str(k)))])
    assert segment_rows(path)[0][0] > 2  # the base merged away
    assert reader.hashes(["gone", "kept"]) == {"kept": "1"}
    assert reader.count() == book.count() == (4 if repeat else 2 * manifest.MERGE_AFTER + 1)
    book.close()
    reader.close()


def _old_manifest(path: Path, rows: list[tuple[str, str]], info: dict[str, str]) -> None:
    """A manifest as versions before the segments wrote it."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, hash TEXT)")
        db.execute("CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", rows)
        db.executemany("INSERT INTO info VALUES (?, ?)", info.items())
    db.close()


def test_an_old_manifest_is_read_then_migrated_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    catalog, uri = tmp_path / "items.csv", f"faiss:{tmp_path / 'store'}"
    path = manifest_path(catalog, uri)
    path.parent.mkdir(parents=True)
    rows = [("z", digest("z")), ("a", digest("a")), ("m", "not hex")]
    _old_manifest(path, rows, {"catalog": str(catalog), "store": uri})
    assert ingested_catalog(uri) == (catalog, ["z", "a", "m"])  # read only: not migrated
    book = IngestManifest(path)
    assert book.hashes(["a", "m", "z"]) == dict(rows) and book.count() == 3
    assert book.info()["store"] == uri
    book.commit([("b", "1")])
    book.close()
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "items" not in tables
    assert ingested_catalog(uri) == (catalog, ["z", "a", "m", "b"])


def test_ingested_catalog_picks_the_newest_manifest_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    uri = f"faiss:{tmp_path / 'store'}"
    for name, ids in (("old.csv", ["x"]), ("new.csv", ["p", "q"])):
        book = IngestManifest(manifest_path(tmp_path / name, uri))
        book.commit([(i, "h") for i in ids], {"catalog": str(tmp_path / name), "store": uri})
        book.close()
        time.sleep(0.02)
    other = IngestManifest(manifest_path(tmp_path / "other.csv", "faiss:/elsewhere"))
    other.commit([("o", "h")], {"catalog": "other.csv", "store": "faiss:/elsewhere"})
    other.close()
    assert ingested_catalog(uri) == (tmp_path / "new.csv", ["p", "q"])
    assert read_manifest(tmp_path / "absent.sqlite") is None


CHILD = """
import sys, time
from embedrec.ingestion import manifest
from embedrec.ingestion.manifest import IngestManifest
path, tag, rounds, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
merge = manifest.Segments.merge
def stalled(self):  # the third commit stops with its segment written, before COMMIT
    print("mid", flush=True)
    time.sleep(60)
if len(sys.argv) > 5:
    manifest.Segments.merge = lambda self: merge(self) if r < 2 else stalled(self)
book = IngestManifest(path)
for r in range(rounds):
    book.commit([(f"{tag}{r}/{j}", f"{r:064x}") for j in range(size)], {tag: str(r)})
    print(r, flush=True)
"""


def _child(path: Path, tag: str, rounds: int, size: int, *stall: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), tag, str(rounds), str(size), *stall],
        stdout=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
    )


def _whole_commits(path: Path, tag: str, size: int) -> int:
    """How many of `tag`'s commits the manifest holds, checking each is whole."""
    book = IngestManifest(path)
    ids = [i for i in book.ids() if i.startswith(tag)]
    rounds = {int(i[len(tag) :].split("/")[0]) for i in ids}
    assert len(ids) == size * len(rounds), "a commit landed in part"
    assert book.hashes(ids) == {i: f"{int(i[len(tag) :].split('/')[0]):064x}" for i in ids}
    book.close()
    return len(rounds)


def test_a_commit_killed_part_way_leaves_the_manifest_as_it_was(tmp_path: Path) -> None:
    path, size = tmp_path / "m.sqlite", 50_000
    proc = _child(path, "k", 5, size, "stall")
    assert proc.stdout is not None
    assert [proc.stdout.readline().strip() for _ in range(3)] == [b"0", b"1", b"mid"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(segment_rows(path)) == 2  # the third segment was written, not committed
    assert _whole_commits(path, "k", size) == 2
    book = IngestManifest(path)
    assert book.info()["k"] == "1"
    book.commit([("after", "1")])
    assert book.count() == 2 * size + 1
    book.close()


def test_a_commit_killed_at_any_time_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    path, size = tmp_path / "m.sqlite", 100_000
    proc = _child(path, "k", 50, size)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"0"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    held = _whole_commits(path, "k", size)
    assert 1 <= held < 50
    assert IngestManifest(path).info()["k"] == str(held - 1)


def test_two_processes_committing_at_once_both_land_whole(tmp_path: Path) -> None:
    path, rounds, size = tmp_path / "m.sqlite", 30, 3000
    IngestManifest(path).close()
    procs = [_child(path, tag, rounds, size) for tag in ("p", "q")]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    assert _whole_commits(path, "p", size) == rounds == _whole_commits(path, "q", size)
    assert IngestManifest(path).count() == 2 * rounds * size


def test_a_reader_follows_another_process_committing_and_merging(tmp_path: Path) -> None:
    path, rounds, size = tmp_path / "m.sqlite", 3 * manifest.MERGE_AFTER, 500
    reader = IngestManifest(path)
    proc = _child(path, "w", rounds, size)
    assert proc.stdout is not None
    for line in proc.stdout:  # each round landed whole, with every one before it
        done = int(line) + 1
        ids = [f"w{r}/{j}" for r in range(done) for j in range(size)]
        assert len(reader.hashes(ids)) == len(ids) <= reader.count()
    assert proc.wait() == 0 and reader.count() == rounds * size
    assert len(segment_rows(path)) <= manifest.MERGE_AFTER + 1
    reader.close()
