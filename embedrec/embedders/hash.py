"""`hash:DIM`: a hashed bag of words, an embedder with no model that costs almost nothing.

It measures the pipeline around an embedder (benchmarks/ingest.py) and stands in for a model
in tests. Each lower-cased word adds +1 or -1 (from its CRC-32) at one of DIM positions; the
sum is L2-normalised. A text with no word maps to a fixed unit vector, so every input gets a
vector a cosine store accepts. The same text gives the same vector in every process.
"""

from __future__ import annotations

import re
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
        if not batch:
            return np.empty((0, self.dim), dtype=np.float32)
        hashed, rows = _hashed_words(batch)
        signs = np.where(hashed & 1, 1.0, -1.0)
        cells = rows * self.dim + (hashed >> 1) % self.dim
        size = len(batch) * self.dim
        out = np.bincount(cells, signs, size).astype(np.float32).reshape(len(batch), self.dim)
        out[~out.any(axis=1), 0] = 1.0  # words that cancel each other out
        # np.linalg.norm(out, axis=1, keepdims=True) as it computes it, without its checks
        return out / np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True))


_MARK = " \0 "
"""Joins the texts of a batch, which is lower-cased and split whole: the NUL is a word of
its own that no text holds (else each text is split alone), and lower-casing depends on
nothing past a space (only a final sigma depends on its neighbours, and not across one)."""
_MARK_CRC = zlib.crc32(b"\0")
_ASCII_SPACES = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
"""The ASCII characters that `str.split` splits on and `bytes.split` does not."""
UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
"""The other characters `str.split` splits on (tests/embedders/test_hash.py checks them)."""
_SPACE_LEADS = (b"\xc2", b"\xe1", b"\xe2", b"\xe3")
"""The first bytes of their UTF-8: text without these (most text) needs no search for them
(a byte is found with memchr; the search costs ten times as much)."""


def _hashed_words(batch: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The CRC-32 of each lower-cased word's UTF-8, and its text's position in `batch`; a
    text with no word has one empty word."""
    joined = _MARK.join(batch)
    if joined.count("\0") != len(batch) - 1:  # a text holds a NUL: each text alone
        texts = [" ".join(text.lower().split()) for text in batch]
        hashed = _crc32s(" ".join(texts).encode("utf-8", "surrogateescape").split(b" "))
        return hashed, np.repeat(np.arange(len(batch)), [t.count(" ") + 1 for t in texts])
    lowered = joined.lower()
    data = lowered.encode("utf-8", "surrogateescape")
    if any(lead in data for lead in _SPACE_LEADS) and UNICODE_SPACE.search(lowered):
        data = " ".join(lowered.split()).encode("utf-8", "surrogateescape")
    # The UTF-8 of anything else but ASCII whitespace holds no ASCII whitespace byte, so
    # bytes.split makes the words str.split would, with one object per word, not two.
    words = data.translate(_ASCII_SPACES).split()
    hashed = _crc32s(words)
    is_mark = hashed == _MARK_CRC
    if np.count_nonzero(is_mark) != len(batch) - 1:  # a word's CRC-32 is that of a mark
        is_mark = np.array([word == b"\0" for word in words], dtype=bool)
    rows = np.cumsum(is_mark)[~is_mark]  # the marks before a word: its text
    hashed = hashed[~is_mark]
    empty = np.flatnonzero(np.bincount(rows, minlength=len(batch)) == 0)
    if len(empty):  # the CRC-32 of no bytes is 0
        hashed = np.concatenate([hashed, np.zeros(len(empty), dtype=np.int64)])
        rows = np.concatenate([rows, empty])
    return hashed, rows


def _crc32s(words: list[bytes]) -> np.ndarray:
    """As signed 64-bit integers: positions are computed from them without a conversion."""
    return np.fromiter(map(zlib.crc32, words), dtype=np.int64, count=len(words))


def from_spec(argument: str | None, **options: object) -> HashEmbedder:
    """`hash` or `hash:DIM` (default 64)."""
    if options:
        raise ValueError(f"the hash embedder takes no options, got {', '.join(options)}")
    if argument is None:
        return HashEmbedder()
    if not argument.isdigit():
        raise ValueError(f"hash embedder: expected hash:DIM with DIM a number, got {argument!r}")
    return HashEmbedder(int(argument))
