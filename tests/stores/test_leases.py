"""Rebuild leases on their own (stores/lifecycle/leases.py): the timed lease that Qdrant
servers and Pinecone keep as a record (over qdrant-client's in-memory engine and the Pinecone
loopback),
which lapses when its holder dies and is taken over; two swaps of one alias at once; a lock
file that is a folder."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.stores import AliasBusy, CorruptStore, open_existing, open_store
from embedrec.stores.lifecycle.aliases import alias_book
from embedrec.stores.lifecycle.leases import Holder
from embedrec.stores.lifecycle.timed_lease import Record, TimedLease, reserve, running
from embedrec.stores.qdrant.aliases import ControlRecord
from embedrec.stores.qdrant.client_engine import ClientEngine
from embedrec.stores.uri import parse_uri
from embedrec.testing.pinecone_loopback import LoopbackPinecone
from tests.stores.test_aliases import fill

REPO = Path(__file__).resolve().parents[2]
SETTLE = 0.05


@pytest.fixture(params=["qdrant", "pinecone"])
def record(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Record]:
    if request.param == "qdrant":
        engine = ClientEngine.connect(parse_uri("qdrant+memory:movies"))
        yield ControlRecord(engine, "movies__embedrec", "qdrant://test/movies")
        engine.close()
        return
    loopback = LoopbackPinecone()
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", loopback.url)
    monkeypatch.setenv("PINECONE_HOST", "")
    open_store("pinecone://leases?create=1", dim=4).close()
    book = alias_book("pinecone://leases?namespace=prod")
    yield book._record()
    book.close()
    loopback.close()
    assert loopback.violations == []


def claim(record: Record, ttl: float = 5.0) -> tuple[TimedLease | None, Holder | None]:
    return TimedLease.claim(record, Holder.me(), settle=SETTLE, ttl=ttl)


def test_a_timed_lease_whose_holder_died_lapses_and_is_taken_over(record: Record) -> None:
    first, _ = claim(record, ttl=1.0)
    assert first is not None
    lease, other = claim(record)
    assert lease is None and other is not None and other.token == first.holder.token
    first._stop.set()  # its process died: nothing renews it any more
    first._thread.join()
    time.sleep(1.1)
    second, _ = claim(record)
    assert second is not None
    with pytest.raises(AliasBusy, match="lease lapsed and was taken by pid"):
        first.check()  # the stalled holder may not swap
    second.check()
    second.release()
    assert running(record) is None


def test_a_timed_lease_is_renewed_while_it_is_held(record: Record) -> None:
    lease, _ = claim(record, ttl=0.6)
    assert lease is not None
    for _ in range(4):
        time.sleep(0.4)
        assert claim(record)[0] is None  # renewed: never lapses while held
        lease.check()
    lease.release()
    again, _ = claim(record)
    assert again is not None
    again.release()


def test_claims_at_the_same_moment_leave_one_holder(record: Record) -> None:
    for _ in range(5):
        start = threading.Barrier(3)
        won: list[TimedLease] = []

        def claimant(start: threading.Barrier = start, won: list[TimedLease] = won) -> None:
            start.wait()
            lease, _ = TimedLease.claim(record, Holder.me(), settle=0.3)
            if lease is not None:
                won.append(lease)

        threads = [threading.Thread(target=claimant) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        won[0].release()


def test_the_generation_counter_never_goes_back(record: Record) -> None:
    assert reserve(record, ["g0003"]) == "g0004"
    assert reserve(record, []) == "g0005"  # g0004 dropped: its name is not reused


# a child that swaps generation argv[2] into alias argv[1], pausing before the replace
SWAP = """
import pathlib, sys, time
import embedrec.stores.lifecycle.generations as points
from embedrec.stores.lifecycle.aliases import alias_book
folder = pathlib.Path(sys.argv[3])
def reached(point):
    if point == "swap:before-replace" and sys.argv[4] == "pause":
        (folder / "paused").touch()
        while not (folder / "go").exists():
            time.sleep(0.02)
points.reached = reached
book = alias_book(sys.argv[1])
print(book.swap(book.generation(sys.argv[2])).live.name)
"""


def test_two_swaps_at_once_both_land_in_order(tmp_path: Path) -> None:
    """The first holds the pointer lock between its write and its replace; the second waits
    for it, and the first's generation is the second's previous: no update lost."""
    uri = f"faiss:{tmp_path / 'movies'}"
    book = alias_book(uri)
    names = []
    for tag in ("one", "two", "three"):
        generation = book.new_generation()
        fill(generation.uri, [tag], tag=tag)
        names.append(generation.name)
    book.swap(book.generation(names[0]))

    def swap(name: str, pause: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", SWAP, uri, name, str(tmp_path), pause],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )

    first = swap(names[1], "pause")
    while not (tmp_path / "paused").exists():
        assert first.poll() is None
        time.sleep(0.02)
    second = swap(names[2], "no")
    time.sleep(1.0)
    assert second.poll() is None  # waiting for the pointer lock
    (tmp_path / "go").touch()
    assert first.wait(60) == 0 and second.wait(60) == 0
    state = book.state()
    assert state.live is not None and state.live.name == names[2]
    assert [g.name for g in state.previous] == [names[1], names[0]]


def test_a_lock_file_that_is_a_folder_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """#23 LOW: a FAISS store's `LOCK` (and an alias's lock files) made a folder."""
    uri = f"faiss:{tmp_path / 'plain'}"
    fill(uri, ["a"], tag="one")
    (tmp_path / "plain" / "LOCK").unlink(missing_ok=True)
    (tmp_path / "plain" / "LOCK").mkdir()
    with open_existing(uri) as store, pytest.raises(CorruptStore) as caught:
        store.upsert(["b"], np.ones((1, 4)))
    assert f"rmdir {tmp_path / 'plain' / 'LOCK'}" in str(caught.value)
    alias = f"faiss:{tmp_path / 'alias'}"
    (tmp_path / "alias" / "alias.lock").mkdir(parents=True)
    with pytest.raises(CorruptStore, match=r"alias\.lock is a folder where embedrec keeps"):
        alias_book(alias).new_generation()
