"""The `Embedder` protocol and helpers shared by the embedders."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from embedrec.common.files import file_sha256

Modality = Literal["text", "image", "item"]


class CatalogRow(Protocol):
    """One catalog record as ingestion reads it, handed to `Embedder.prepare`."""

    @property
    def id(self) -> str: ...
    @property
    def payload(self) -> str | bytes:
        """The catalog's input column(s): the text from the template, or the image's bytes."""

    @property
    def metadata(self) -> Mapping[str, Any]: ...


@runtime_checkable
class Embedder(Protocol):
    """Maps a batch of inputs to L2-normalised float32 vectors of shape (n, dim).

    `name` identifies the model and its weights (a content hash where the weights are
    local): it is part of every cache key, so two embedders with the same name must give
    the same vectors for the same input.
    """

    name: str
    dim: int
    modality: Modality

    def prepare(self, row: CatalogRow) -> Any:
        """The input `embed` takes for one catalog row (text, a decoded image, a feature
        dict), so that ingestion needs no change for a new embedder; raises `InputError`
        for a row it cannot use."""

    def embed(self, batch: Sequence[Any]) -> np.ndarray: ...


class InputError(ValueError):
    """An input an embedder cannot use; `index` is its position in the batch."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"item {index}: {reason}")
        self.index = index
        self.reason = reason


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; an explicit GPU must exist."""
    if not _DEVICE.match(device):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")
    if device == "cpu":
        return device
    import torch  # seconds to import: only when a device other than the CPU is asked for

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but torch sees no MPS device")
    return device


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """`file_sha256` memoised on (path, size, mtime): a file that changes gets a new key."""
    return file_sha256(path)


def weights_fingerprint(path: Path) -> str:
    """Short sha256 of a weights file, or of every file under a model folder (names and
    contents), memoised per (path, size, mtime) within the process."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        rel = f.relative_to(path).as_posix() if path.is_dir() else ""
        h.update(f"{rel}\0{_file_digest(str(f), st.st_size, st.st_mtime_ns)}\0".encode())
    return h.hexdigest()[:16]
