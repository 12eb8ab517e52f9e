"""Reading and replacing the small JSON files stores keep beside their data (a FAISS
manifest, an alias pointer and its generation counter, qdrant-client's local `meta.json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedrec.stores.errors import CorruptStore

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
