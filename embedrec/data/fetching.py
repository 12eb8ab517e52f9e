"""What every dataset loader shares: its two errors and an atomic download into the cache."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path


class DatasetUnavailable(OSError):
    """No source of a dataset could be reached or read."""


class DatasetCorrupt(ValueError):
    """A dataset file exists but is truncated or malformed."""


_DOWNLOAD_TIMEOUT_S = 10.0


def download(url: str, dest: Path, timeout: float = _DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch `url` to `dest` atomically (a partial download never lands at `dest`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def cached_or_download(url: str, folder: Path) -> Path:
    """The file named by `url`'s last part in `folder`, downloaded there if it is not yet."""
    dest = folder / url.rsplit("/", 1)[-1]
    return dest if dest.exists() else download(url, dest)
