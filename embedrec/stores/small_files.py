"""The small files stores keep beside their data: JSON ones read and replaced atomically (a
FAISS manifest, an alias pointer and its generation counter, qdrant-client's local
`meta.json`), and lock files, the one way embedrec opens and flocks one (a FAISS store's
`LOCK`, an alias's `alias.lock` and `rebuild.lock`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from embedrec.stores.errors import CorruptStore, StoreWriteError

ABSENT = object()
"""What `read_json` returns for a file that is not there (a file holding `null` is None)."""


def read_json(where: Path) -> Any:
    """The parsed file, `ABSENT` when there is none; `CorruptStore` naming it when it cannot
    be read or parsed (its shape is the caller's to check)."""
    try:
        return json.loads(where.read_bytes())
    except FileNotFoundError:
        return ABSENT
    except (OSError, ValueError) as exc:
        raise CorruptStore(f"{where} is unreadable: {exc}") from None


def write_json(where: Path, data: Any, before_replace: Callable[[], None] = lambda: None) -> None:
    """Replace `where` with `data` atomically and durably: a temp file, fsynced, renamed over
    it, the folder fsynced; a crash at any point leaves the old file or the new one.
    `before_replace` runs between the fsync and the rename (the failure tests' point)."""
    tmp = where.parent / f".{where.name}.tmp"
    with tmp.open("w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    before_replace()
    os.replace(tmp, where)
    fd = os.open(where.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
