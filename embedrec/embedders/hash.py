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
        if not set(map(type, batch)) <= {str}:
            i, bad = next((i, t) for i, t in enumerate(batch) if not isinstance(t, str))
            raise InputError(i, f"expected text, got {type(bad).__name__}")
        # Each text's words joined by one space: the whole batch is encoded once and split
        # into the UTF-8 of each word (a text with no word gives one empty word).
        texts = [" ".join(text.lower().split()) for text in batch]
        words = " ".join(texts).encode("utf-8", "surrogateescape").split(b" ")
        counts = [text.count(" ") + 1 for text in texts]
        hashed = np.fromiter(map(zlib.crc32, words), dtype=np.uint32, count=len(words))
        signs = np.where(hashed & 1, 1.0, -1.0)
        rows = np.repeat(np.arange(len(batch), dtype=np.intp), counts)
        cells = rows * self.dim + ((hashed >> 1) % self.dim).astype(np.intp)
        size = len(batch) * self.dim
        out = np.bincount(cells, signs, size).astype(np.float32).reshape(len(batch), self.dim)
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
