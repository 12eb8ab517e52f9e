"""Vectors keyed by 32-byte content digests: sorted arrays on disk, a dict while buffered.

The embedding cache (cache.py) looks keys up in bulk: a batch of digests against a few sorted
key arrays (its segments on disk), each search one `np.searchsorted` on the digests' first 8
bytes as big-endian integers, confirmed on the whole digest, behind a `PrefixFilter` that
lets few new keys through. No Python object is made per key on this path. The vectors
computed but not yet written (`VectorBuffer`) are found through a dict behind such a filter
instead: a batch is added to it far more cheaply than merged into a sorted array.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

KEY = np.dtype("S32")
"""A sha256 digest. numpy drops trailing NUL bytes when an element becomes Python bytes, so
digests go to and from Python only through `digests_of` and `hex_of`."""
_PREFIX = np.dtype(">u8")
BUFFER_FILTER_BITS = 20
"""A buffer's `PrefixFilter`: 1 MiB, about 1.6% false positives at the pipeline's 16,384."""


def digests_of(hex_keys: list[str]) -> np.ndarray:
    """Hex keys (`content_key`) as a digest array."""
    return np.frombuffer(b"".join(map(bytes.fromhex, hex_keys)), dtype=KEY)


def hex_of(digests: np.ndarray) -> list[str]:
    raw = np.ascontiguousarray(digests, dtype=KEY).tobytes()
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def prefixes(digests: np.ndarray) -> np.ndarray:
    """Each digest's first 8 bytes as an unsigned integer: in the digests' own order."""
    return np.ascontiguousarray(digests, dtype=KEY).view(_PREFIX)[::4].astype(np.uint64)


def sorted_unique(digests: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`digests` sorted with their rows of `vectors`; of a repeated digest, the last row."""
    prefix = prefixes(digests)
    if np.all(prefix[1:] > prefix[:-1]):  # sorted already (as a buffer's contents are)
        return digests, vectors
    order = np.argsort(prefix)  # integers: a tenth the cost of the digests
    if np.all(prefix[order[1:]] != prefix[order[:-1]]):  # distinct in 64 bits: distinct
        return digests[order], vectors[order]
    # A digest repeated, or two alike in 64 bits: sorted whole, reversed so that a stable
    # sort puts the last row of a digest first.
    digests, vectors = digests[::-1], vectors[::-1]
    order = np.argsort(digests, kind="stable")
    keys = digests[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    return keys[keep], vectors[order[keep]]


@dataclass
class KeyIndex:
    """One set of sorted, distinct digests (a segment's)."""

    keys: np.ndarray
    prefix: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray) -> KeyIndex:
        return cls(keys, prefixes(keys))

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, digests: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `digests` held here, their positions in `keys`); `prefix` is
        `prefixes(digests)`, compared first: a digest missing here costs no digest compare."""
        if not len(self.keys):
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
        at = np.searchsorted(self.prefix, prefix)
        np.minimum(at, len(self.keys) - 1, out=at)
        held = np.flatnonzero(self.prefix[at] == prefix)
        if not len(held):
            return held, held
        at = at[held]
        same = self.keys[at] == digests[held]
        for i in np.flatnonzero(~same):  # a key alike in its first 64 bits: look on
            j = int(at[i]) + 1
            while j < len(self.keys) and self.prefix[j] == self.prefix[at[i]]:
                if self.keys[j] == digests[held[i]]:
                    at[i], same[i] = j, True
                    break
                j += 1
        return held[same], at[same]


def merge_from(sizes: list[int]) -> int:
    """Where the tail of `sizes` (oldest first) to merge into one begins: the first part no
    larger than all after it together, so that sizes stay at least doubling towards the
    oldest (as a binary counter's digits): each row is rewritten about log2(total / part)
    times and there are about that many parts. `len(sizes)` or more: nothing to merge."""
    after = 0
    start = len(sizes)
    for i in range(len(sizes) - 1, -1, -1):
        if sizes[i] <= after:
            start = i
        after += sizes[i]
    return start if start < len(sizes) - 1 else len(sizes)


Finder = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Looks digests (and their `prefixes`) up in one place: (positions found, their vectors)."""


def in_index(index: KeyIndex, read: Callable[[np.ndarray], np.ndarray]) -> Finder:
    """A finder over `index`, whose rows `read(positions in index)` gives."""

    def find(digests: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit, at = index.find(digests, prefix)
        return hit, read(at) if len(at) else np.empty((0, 0), dtype=np.float32)

    return find


class PrefixFilter:
    """Which leading `bits`-bit patterns the held digests have: a digest whose pattern is
    absent is not held (a Bloom filter with one hash), so a lookup of new keys costs one
    gather rather than a search per sorted array. It only grows: keys merged away are held
    by the merged array."""

    def __init__(self, bits: int) -> None:
        self.shift = np.uint64(64 - bits)
        self.seen = np.zeros(1 << bits, dtype=bool)

    def add(self, prefix: np.ndarray) -> None:
        self.seen[prefix >> self.shift] = True

    def candidates(self, prefix: np.ndarray) -> np.ndarray:
        """Positions in `prefix` that may be held."""
        return np.flatnonzero(self.seen[prefix >> self.shift])


def first_found(
    finders: Iterable[Finder],
    digests: np.ndarray,
    prefix: np.ndarray,
    dim: int,
    only: PrefixFilter | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in `digests` found, their vectors): each from the first finder with it;
    `only`: the digests it lets through are the only ones looked for."""
    todo = np.arange(len(digests))
    if only is not None:
        todo = only.candidates(prefix)
        digests, prefix = digests[todo], prefix[todo]
    hits, found = [np.empty(0, dtype=np.intp)], [np.empty((0, dim), dtype=np.float32)]
    for find in finders:
        if not len(todo):
            break
        at, rows = find(digests, prefix)
        if len(at):
            hits.append(todo[at])
            found.append(rows)
            todo = np.delete(todo, at)
            digests, prefix = np.delete(digests, at), np.delete(prefix, at)
    return np.concatenate(hits), np.concatenate(found)


class VectorBuffer:
    """Vectors computed and not yet in the cache, in the order added, found by digest in a
    dict behind a `PrefixFilter`: a batch of new keys costs one gather, and adding one costs
    a Python bytes object and a dict entry per key (about 0.1 µs), where sorted chunks cost
    their merges (over a µs per vector at the pipeline's 16,384). The ingest adds whole
    batches (`add`); a caller that holds its keys one at a time (the Ray stage) sets them
    by hex key, and they are added when next read."""

    def __init__(self) -> None:
        self.filter = PrefixFilter(BUFFER_FILTER_BITS)
        self._keys = np.empty(0, dtype=KEY)
        self._rows = np.empty((0, 0), dtype=np.float32)
        """`_size` rows used, in the order added (a repeated key: the later row wins)."""
        self._size = 0
        self._where: dict[bytes, int] = {}
        """Row of each key (`KEY` elements as Python bytes: distinct for distinct digests)."""
        self._single: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()
        """One writer thread may put it in the cache while another looks keys up in it."""

    def add(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Buffer `vectors` (rows of one width, that of those buffered before) by digest."""
        with self._lock:
            held = self._rows.shape[1] if self._size else vectors.shape[1]
            if vectors.shape[1] != held or len(vectors) != len(digests):
                raise ValueError(
                    f"a buffer of {held}-d vectors was given {vectors.shape} for {len(digests)}"
                    " keys"
                )
            start, end = self._size, self._size + len(digests)
            if end > len(self._keys):
                self._grow(end, held)
            self._keys[start:end] = digests
            self._rows[start:end] = vectors
            self._where.update(zip(digests.tolist(), range(start, end), strict=True))
            self.filter.add(prefixes(digests))
            self._size = end

    def _grow(self, size: int, dim: int) -> None:
        """Room for `size` rows at least (doubling: each row is copied about twice)."""
        capacity = max(size, 2 * len(self._keys), 1024)
        keys, rows = np.empty(capacity, dtype=KEY), np.empty((capacity, dim), dtype=np.float32)
        if self._size:
            keys[: self._size] = self._keys[: self._size]
            rows[: self._size] = self._rows[: self._size]
        self._keys, self._rows = keys, rows

    def _settle(self) -> None:
        """Vectors set one by one are added."""
        if not self._single:
            return
        with self._lock:
            single, self._single = self._single, {}
        if single:
            self.add(digests_of(list(single)), np.stack(list(single.values())))

    def __setitem__(self, key: str, vector: np.ndarray) -> None:
        self._single[key] = vector

    def __len__(self) -> int:
        return len(self._where) + len(self._single)

    def find(self, digests: np.ndarray, prefix: np.ndarray, dim: int) -> tuple[np.ndarray, ...]:
        """(positions in `digests` buffered as `dim`-d vectors, those vectors)."""
        self._settle()
        with self._lock:
            todo = self.filter.candidates(prefix)
            if not len(todo) or self._rows.shape[1] != dim:
                return np.empty(0, dtype=np.intp), np.empty((0, dim), dtype=np.float32)
            where = self._where
            rows = np.array([where.get(key, -1) for key in digests[todo].tolist()], np.intp)
            held = rows >= 0
            return todo[held], self._rows[rows[held]]

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Every buffered digest (sorted, distinct) and its vector."""
        self._settle()
        with self._lock:
            if not self._size:
                return np.empty(0, dtype=KEY), np.empty((0, 0), dtype=np.float32)
            return sorted_unique(self._keys[: self._size], self._rows[: self._size])
