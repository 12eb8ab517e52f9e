"""`hash:DIM`: a hashed bag of words, an embedder with no model that costs almost nothing.

It measures the pipeline around an embedder (benchmarks/ingest.py) and stands in for a model
in tests. Each lower-cased word adds +1 or -1 (from its CRC-32) at one of DIM positions; the
sum is L2-normalised. A text with no word maps to a fixed unit vector, so every input gets a
vector a cosine store accepts. The same text gives the same vector in every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from embedrec.embedders.base import CatalogRow, InputError, Modality

DEFAULT_DIM = 64


class HashEmbedder:
    modality: Modality = "text"

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 2:
            raise ValueError(f"hash embedder: dim must be at least 2, got {dim}")
        self.dim = dim
        self.name = f"hash-bow-{dim}"

    def prepare(self, row: CatalogRow) -> str:
        if not isinstance(row.payload, str):
            raise InputError(0, "the hash embedder takes text, not image bytes")
        return row.payload

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        rows: list[int] = []
        codes: list[int] = []
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise InputError(i, f"expected text, got {type(text).__name__}")
            words = text.lower().split() or [""]
            rows += [i] * len(words)
            codes += [zlib.crc32(w.encode("utf-8", "surrogateescape")) for w in words]
        hashed = np.asarray(codes, dtype=np.uint32)
        signs = np.where(hashed & 1, 1.0, -1.0).astype(np.float32)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        np.add.at(out, (np.asarray(rows, dtype=np.intp), (hashed >> 1) % self.dim), signs)
        out[~out.any(axis=1), 0] = 1.0  # words that cancel each other out
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def from_spec(argument: str | None, **options: object) -> HashEmbedder:
    """`hash` or `hash:DIM` (default 64)."""
    if options:
        raise ValueError(f"the hash embedder takes no options, got {', '.join(options)}")
    if argument is None:
        return HashEmbedder()
    if not argument.isdigit():
        raise ValueError(f"hash embedder: expected hash:DIM with DIM a number, got {argument!r}")
    return HashEmbedder(int(argument))
