"""Strings packed as UTF-8 in one byte array with int64 offsets: the string dictionaries of
the metadata columns, and a FAISS store's ids by slot (`PackedIds`).

Why ids are packed: a Python list of 1M id strings (with the object array hits read from)
took about 230 bytes a record, a quarter of a 1M x 64 Flat store's memory; packed they take
their UTF-8 bytes and 8 bytes of offset, and a saved store maps them from its file. A hit
decodes only its own ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from embedrec.stores.text import utf8_packed


def grown(array: np.ndarray, used: int, need: int, fill: Any) -> np.ndarray:
    """`array` with room for `need` entries (its first `used` kept, the rest `fill`): itself
    when it has the room and is writable (not a read-only map of a saved file)."""
    if array.size >= need and array.flags.writeable:
        return array
    out = np.full(max(need, 2 * array.size, 1024), fill, dtype=array.dtype)
    out[:used] = array[:used]
    return out


CHUNK = 1 << 16
"""Ids decoded at a time where all of them are read (hashing them for the id index)."""


def pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The strings' UTF-8 bytes, one after another, and the n + 1 offsets bounding them."""
    packed = utf8_packed(strings)
    if packed is None:
        raise ValueError("only str that UTF-8 can write is packed")
    return packed


def unpack(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """The strings of `pack`'s output (any data before offsets[0] is not read)."""
    raw = bytes(data[offsets[0] : offsets[-1]]) if offsets.size else b""
    bounds = (offsets - offsets[0]).tolist() if offsets.size else []
    text = raw.decode("utf-8")
    if len(text) == len(raw):  # ASCII: byte offsets are character offsets
        return [text[a:b] for a, b in itertools.pairwise(bounds)]
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]


class PackedIds:
    """Ids by slot. A dead slot keeps its bytes here (the slot table's `alive` says it is
    dead, and no search returns it) until a compaction (`taken`); saved, a dead slot's id is
    empty (`saved`), which no live id is. Appends extend the arrays with room to grow; a
    saved store's arrays are read-only maps of its file until the first append copies them."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self._data, self._offsets = data, offsets
        self._n = offsets.size - 1
        self._bounds = offsets
        self._view, self._at = memoryview(data), memoryview(offsets)

    @classmethod
    def of(cls, ids: Sequence[str | None]) -> PackedIds:
        """From a list (None for a dead slot: empty)."""
        return cls(*pack([i or "" for i in ids]))

    def __len__(self) -> int:
        return self._n

    def nonempty(self) -> np.ndarray:
        """Per slot: whether its id is not empty (a saved dead slot's is)."""
        return self._bounds[1:] != self._bounds[:-1]

    def take(self, slots: np.ndarray) -> list:
        """The ids at `slots` (a 1-d array: a list of ids; 2-d: a list of rows). A slot of
        -1 reads as "" (its bounds are the end and the start). Bounds are read through a
        memoryview and bytes decoded one id at a time: two fancy indexes and a `str` of a
        memoryview per id took twice as long for a query's ten (4.6 against 2.4 µs)."""
        view, at = self._view, self._at
        if slots.ndim == 1:
            return [view[at[s] : at[s + 1]].tobytes().decode() for s in slots.tolist()]
        return [[view[at[s] : at[s + 1]].tobytes().decode() for s in row] for row in slots.tolist()]

    def strings(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The ids of slots start..stop-1, dead ones too."""
        return unpack(self._data, self._bounds[start : (self._n if stop is None else stop) + 1])

    def chunks(self) -> Iterator[list[str]]:
        """Every id, a chunk of `CHUNK` at a time."""
        for start in range(0, self._n, CHUNK):
            yield self.strings(start, min(start + CHUNK, self._n))

    def extend(
        self, ids: Sequence[str], packed: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """Append `ids` (`packed` already, where given: `pack`'s output for them)."""
        data, offsets = pack(ids) if packed is None else packed
        used, n = int(self._bounds[-1]), self._n
        self._data = grown(self._data, used, used + data.size, 0)
        self._data[used : used + data.size] = data
        self._offsets = grown(self._offsets, n + 1, n + 1 + len(ids), 0)
        self._offsets[n + 1 : n + 1 + len(ids)] = offsets[1:] + used
        self._n = n + len(ids)
        self._bounds = self._offsets[: self._n + 1]
        self._view, self._at = memoryview(self._data), memoryview(self._offsets)

    def taken(self, slots: np.ndarray) -> PackedIds:
        """Only the ids at `slots` (ascending), renumbered from 0."""
        keep = np.zeros(self._n, dtype=bool)
        keep[slots] = True
        return PackedIds(*self._kept(keep))

    def saved(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the store's file holds: the bytes and offsets, a dead slot's id empty."""
        if alive.all():
            return self._data[: self._bounds[-1]], self._bounds
        return self._kept(alive, drop=False)

    def _kept(self, keep: np.ndarray, *, drop: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The bytes of the slots `keep` marks; the others dropped, or emptied."""
        lengths = np.diff(self._bounds)
        data = self._data[: self._bounds[-1]][np.repeat(keep, lengths)]
        kept = lengths[keep] if drop else np.where(keep, lengths, 0)
        offsets = np.zeros(kept.size + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        return data, offsets
