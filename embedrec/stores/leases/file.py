"""Lock files: the one way embedrec opens and flocks one (a FAISS store's `LOCK`, an alias's
`alias.lock` and `rebuild.lock`), the rebuild lease of an alias that lives in a folder, and
the alias's generation counter kept beside it.

The rebuild lease is an exclusive flock on `rebuild.lock`, held from the start of a rebuild to
after its swap; the kernel drops it when the holder exits, kill -9 included, so a crashed
rebuild never blocks the next one. While held, the file names its holder (JSON), for the
message a second rebuild gives; the name is cleared on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from embedrec.stores import generations
from embedrec.stores.errors import CorruptStore, StoreWriteError
from embedrec.stores.json_file import ABSENT, read_json, write_json
from embedrec.stores.leases import Holder

COUNTER_FORMAT = 1
STARTING = Holder(token="", pid=0, host="?", started=0.0)
"""The holder of a lease whose file does not name it yet (claimed a moment ago)."""


def open_lock(path: Path) -> TextIO:
    """The lock file at `path`, opened for flock and created when absent; a `StoreError`
    naming the path and the fix when a folder sits there or it cannot be opened."""
    try:
        return path.open("a+")
    except IsADirectoryError:
        raise CorruptStore(
            f"{path} is a folder where embedrec keeps a lock file; remove it "
            f"(rmdir {path}, after checking it holds nothing of yours) and run again"
        ) from None
    except OSError as exc:
        raise StoreWriteError(
            f"{path}: the lock file cannot be opened ({exc.strerror}); make it a file this "
            "user may read and write, or remove it (embedrec makes a new one)"
        ) from None


def try_lock(path: Path) -> TextIO | None:
    """`path` flocked exclusively (held while the returned file stays open), None when
    another open file holds it (this process's own included)."""
    handle = open_lock(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `path`'s exclusive flock for the block, waiting for it."""
    with open_lock(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _named(path: Path) -> Holder:
    """Who holds `path`'s lease, as its file says (STARTING while it says nothing yet)."""
    try:
        return Holder.from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, CorruptStore):  # empty or half-written: just claimed
        return STARTING


def running(path: Path) -> Holder | None:
    """The holder of the lease at `path` while one holds it, else None."""
    if not path.exists():
        return None
    handle = try_lock(path)
    if handle is None:
        return _named(path)
    handle.close()
    return None


class FileLease:
    """A held rebuild lease on `path` (see the module doc)."""

    def __init__(self, path: Path, handle: TextIO, holder: Holder) -> None:
        self.path = path
        self._handle = handle
        self.holder = holder
        self._name(holder)

    @classmethod
    def claim(cls, path: Path, me: Holder) -> tuple[FileLease | None, Holder | None]:
        """(the lease, None), or (None, the holder in the way)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = try_lock(path)
        if handle is None:
            return None, _named(path)
        return cls(path, handle, me), None

    def _name(self, holder: Holder) -> None:
        self.holder = holder
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps(holder.to_json()))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def building(self, generation: str) -> None:
        self._name(self.holder.building(generation))

    def check(self) -> None:
        """Always still held: the flock lasts as long as this process keeps the file open."""

    def release(self) -> None:
        if self._handle.closed:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.close()


def reserve(counter: Path, lock: Path, taken: Iterable[str]) -> str:
    """A generation name never handed out before for this alias: one past the highest of
    `taken` and of the last one `counter` records, which then records it (under `lock`)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock):
        raw = read_json(counter)
        last = None if raw is ABSENT else raw.get("last") if isinstance(raw, dict) else raw
        if last is not None and not (isinstance(last, str) and generations.NAME.fullmatch(last)):
            raise CorruptStore(f"{counter}: not a generation counter: {raw!r:.200}")
        name = generations.next_name([*taken, *([last] if last else [])])
        write_json(counter, {"format": COUNTER_FORMAT, "last": name})
    return name
