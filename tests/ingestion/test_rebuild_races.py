"""Two rebuilds of one alias at once (issue #23): the second, started while the first runs,
refuses naming it or waits with `--wait`; nothing a running rebuild writes is taken for a
leftover; a rebuild killed (SIGKILL) at each named point hands the alias to the one waiting.
Each rebuild runs in a child process (tests/ingestion/rebuild_child.py) paused or killed at
the named points of `embedrec.stores.lifecycle.generations.reached`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from embedrec.cli import main
from embedrec.stores import open_existing, open_store
from embedrec.stores.lifecycle.aliases import alias_book
from tests.ingestion import test_rebuild
from tests.ingestion.test_rebuild import ROWS, HashEmbedder, answers, ingest_argv

REPO = Path(__file__).resolve().parents[2]
work, loopback = test_rebuild.work, test_rebuild.loopback  # the fixtures


class Child:
    """`embedrec ARGV` in a child process, with the fault hooks set by `hooks`."""

    started: ClassVar[list[Child]] = []

    def __init__(self, work: Path, name: str, argv: list[str], **hooks: str) -> None:
        self.folder = work / name
        self.folder.mkdir()
        env = os.environ | {"PYTHONPATH": str(REPO), "EMBEDREC_CACHE": str(work / "cache")}
        env |= {"PAUSE_DIR": str(self.folder), **hooks}
        self.err = (self.folder / "stderr").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ingestion.rebuild_child", *argv],
            cwd=REPO,
            env=env,
            stdout=(self.folder / "stdout").open("w"),
            stderr=self.err,
        )
        Child.started.append(self)

    def stderr(self) -> str:
        return (self.folder / "stderr").read_text()

    def until(self, what: str, timeout: float = 120) -> None:
        """Wait until the child is paused (`what` == "paused") or its stderr says `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what == "paused" and (self.folder / "paused").exists():
                return
            if what != "paused" and what in self.stderr():
                return
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr()}"
            time.sleep(0.05)
        raise AssertionError(f"never {what!r}: {self.stderr()[-2000:]}")

    def go(self) -> None:
        (self.folder / "go").touch()

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self.err.close()
        return code

    def report(self) -> dict:
        return json.loads((self.folder / "stdout").read_text())


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """A test that fails with a child paused must not leave it waiting for ever."""
    yield
    while Child.started:
        child = Child.started.pop()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
        child.err.close()


def rebuild_argv(work: Path, uri: str, model: str, *extra: str) -> list[str]:
    argv = ingest_argv(work, uri, model, "--rebuild", "--json", "--batch-size", "32")
    return [*argv, "--checkpoint-seconds", "0", *extra]


@pytest.fixture
def alias(work: Path) -> str:
    uri = f"faiss:{work / 'store'}?index=HNSW32"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0  # g0001 live
    return uri


def full(uri: str) -> int:
    """The live generation's count, read through the alias."""
    with open_existing(uri) as store:
        return store.count()


def test_a_second_rebuild_while_the_first_is_between_validation_and_swap_is_refused(
    work: Path,
    alias: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """The attack of #23: on the old code the second removed the first's generation as a
    leftover, reused its name, and the first swapped a half-built store in."""
    first = Child(work, "first", rebuild_argv(work, alias, "new"),
                  PAUSE_AT="rebuild:validated", PAUSE_AFTER="1")  # fmt: skip
    first.until("paused")
    capsys.readouterr()
    assert main(rebuild_argv(work, alias, "new")) == 2
    text = capsys.readouterr().err.strip()
    err = text.splitlines()[-1]  # after the header line, one line: the error
    assert "Traceback" not in text and err.startswith("embedrec ingest: error: ")
    assert f"is being rebuilt by pid {first.proc.pid} on " in err
    assert "started 20" in err and "building g0002" in err and "--wait" in err
    assert main(["generations", alias, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert f"pid {first.proc.pid} on " in listing["rebuild"]
    assert {row["generation"]: row["role"] for row in listing["generations"]} == {
        "g0001": "live",
        "g0002": "building",
    }
    first.go()
    assert first.finish() == 0, first.stderr()
    report = first.report()
    assert report["live"] == "g0002" and report["swapped"] and report["removed"] == []
    assert alias_book(alias).live_token() == "g0002" and full(alias) == ROWS


def test_a_second_rebuild_with_wait_runs_after_the_first(
    work: Path,
    alias: str,
) -> None:
    """Started while the first is ingesting (the 5 s-later case of #23): it waits, then
    builds a generation of its own; both go live in turn, each whole."""
    first = Child(work, "first", rebuild_argv(work, alias, "new"),
                  PAUSE_AT="rebuild:ingesting", PAUSE_AFTER="3")  # fmt: skip
    first.until("paused")
    second = Child(work, "second", rebuild_argv(work, alias, "newer", "--wait"))
    second.until(f"waiting for the rebuild of {alias} by pid {first.proc.pid}")
    first.go()
    assert first.finish() == 0, first.stderr()
    assert second.finish() == 0, second.stderr()
    one, two = first.report(), second.report()
    assert (one["live"], two["live"]) == ("g0002", "g0003") and two["removed"] == []
    assert two["previous"] == ["g0002", "g0001"]
    assert one["count"] == two["count"] == full(alias) == ROWS


@pytest.mark.parametrize(
    ("point", "after"),
    [
        ("rebuild:ingesting", 4),
        ("rebuild:validating", 1),
        ("rebuild:validated", 1),
        ("swap:before-replace", 1),
        ("swap:after-replace", 1),
    ],
)
def test_a_first_rebuild_killed_hands_the_alias_to_the_waiting_one(
    work: Path,
    alias: str,
    point: str,
    after: int,
) -> None:
    before = answers(alias)
    hooks = {"PAUSE_AT": "rebuild:started", "PAUSE_AFTER": "1", "KILL_AT": point}
    first = Child(work, "first", rebuild_argv(work, alias, "new"), **hooks, KILL_AFTER=str(after))
    first.until("paused")
    second = Child(work, "second", rebuild_argv(work, alias, "newer", "--wait"))
    second.until("waiting for the rebuild")
    assert answers(alias) == before
    first.go()
    assert first.finish() == -signal.SIGKILL
    swapped = point == "swap:after-replace"
    assert alias_book(alias).live_token() == ("g0002" if swapped else "g0001")
    assert second.finish() == 0, second.stderr()
    report = second.report()
    assert report["live"] == "g0003" and report["count"] == full(alias) == ROWS
    assert report["removed"] == ([] if swapped else ["g0002"])  # abandoned: its holder died
    assert report["previous"] == (["g0002", "g0001"] if swapped else ["g0001"])


def test_a_waiting_rebuild_killed_leaves_the_running_one_alone(
    work: Path,
    alias: str,
) -> None:
    first = Child(work, "first", rebuild_argv(work, alias, "new"),
                  PAUSE_AT="rebuild:validated", PAUSE_AFTER="1")  # fmt: skip
    first.until("paused")
    second = Child(work, "second", rebuild_argv(work, alias, "newer", "--wait"))
    second.until("waiting for the rebuild")
    second.proc.kill()
    assert second.finish() == -signal.SIGKILL
    first.go()
    assert first.finish() == 0, first.stderr()
    assert first.report()["live"] == "g0002" and full(alias) == ROWS


def test_a_lock_file_replaced_by_a_folder_is_a_one_line_error(
    work: Path,
    alias: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """#23 LOW: `LOCK` made a folder gave a raw IsADirectoryError; so does `rebuild.lock`."""
    live = work / "store" / "g0001"
    (live / "LOCK").unlink(missing_ok=True)
    (live / "LOCK").mkdir()
    with (work / "items.csv").open("a") as fh:
        fh.write(f"{ROWS},a new item,1\n")
    capsys.readouterr()
    assert main(ingest_argv(work, alias, "old")) == 2  # a plain ingest writes the live one
    text = capsys.readouterr().err.strip()
    err = text.splitlines()[-1]  # after the header lines, one line: the error
    assert "IsADirectoryError" not in text and err.startswith("embedrec ingest: error: ")
    assert f"{live / 'LOCK'} is a folder where embedrec keeps a lock file" in err
    assert f"rmdir {live / 'LOCK'}" in err
    (work / "store" / "rebuild.lock").unlink(missing_ok=True)
    (work / "store" / "rebuild.lock").mkdir()
    assert main(rebuild_argv(work, alias, "new")) == 2
    assert "rebuild.lock is a folder where embedrec keeps a lock file" in capsys.readouterr().err


def test_a_killed_rebuild_on_pinecone_lapses_and_the_waiting_one_takes_over(
    work: Path, loopback: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinecone has no lock: the lease is a timed record. Its holder killed, it names the
    dead holder until it lapses (LEASE_TTL_S in the child), then a waiting rebuild takes
    it and removes the dead one's generation."""
    monkeypatch.setattr("embedrec.stores.pinecone.aliases.SETTLE_S", 0.2)
    open_store("pinecone://items?create=1", dim=HashEmbedder.dim).close()
    uri = "pinecone://items?namespace=prod"
    rows = [f"{i},item number {i},{i % 7}" for i in range(80)]
    (work / "items.csv").write_text("item_id,title,shelf\n" + "\n".join(rows) + "\n")
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    first = Child(work, "first", rebuild_argv(work, uri, "new"),
                  KILL_AT="rebuild:validated", KILL_AFTER="1", LEASE_TTL_S="15")  # fmt: skip
    assert first.finish() == -signal.SIGKILL
    holder = alias_book(uri).running()
    assert holder is not None and (holder.pid, holder.generation) == (first.proc.pid, "g0002")
    second = Child(work, "second", rebuild_argv(work, uri, "newer", "--wait"))
    assert second.finish() == 0, second.stderr()
    assert f"waiting for the rebuild of {uri} by pid {first.proc.pid}" in second.stderr()
    report = second.report()
    assert report["removed"] == ["g0002"] and report["live"] == "g0003"
    assert report["previous"] == ["g0001"] and report["count"] == 80
    assert alias_book(uri).running() is None
