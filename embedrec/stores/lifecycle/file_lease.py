"""The rebuild lease of an alias that lives in a folder, and the alias's generation counter
kept beside it (the lock file itself is opened and flocked by `stores/small_files.py`).

The rebuild lease is an exclusive flock on `rebuild.lock`, held from the start of a rebuild to
after its swap; the kernel drops it when the holder exits, kill -9 included, so a crashed
rebuild never blocks the next one. While held, the file names its holder (JSON), for the
message a second rebuild gives; the name is cleared on release.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from embedrec.stores.errors import CorruptStore
from embedrec.stores.lifecycle import generations
from embedrec.stores.lifecycle.leases import Holder
from embedrec.stores.small_files import ABSENT, locked, read_json, try_lock, write_json

COUNTER_FORMAT = 1
STARTING = Holder(token="", pid=0, host="?", started=0.0)
"""The holder of a lease whose file does not name it yet (claimed a moment ago)."""


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
