"""id -> slot for a FAISS store's records, without a Python object per id.

Each id's key (`IdKeys`: the top 32 bits of Python's own string hash, never saved, rebuilt
per process; an upserted batch's keys come from its duplicate check) sits with its slot in
the low 32 bits of one int64 entry, in a few sorted runs, merged as they grow (a binary
counter: a run merges into the one before it once that is at most twice its size, so each
entry is merged O(log n) times; one stable sort of two sorted runs is a linear merge). A
lookup finds equal keys by binary search and confirms each against the slot's packed id in
the table, so ids sharing a key cost one comparison each, never a wrong answer, and a dead
slot never matches. 8 bytes a record and a bit filter of 1 to 4 bytes, where a dict of
str -> int took about 70 at 1M (and the key and slot in two arrays, 16).

Why the bit filter: an upsert looks up every id it writes, nearly all of them new, and a
binary search of each in every run took 0.2 s of CPU for 1M ids in batches of 10,000 (FAISS's
`add` of their vectors: 0.3 s). A key whose bit (8 to 32 bits per entry) is clear is in no
run: at most about 1 in 9 new ids goes on to the binary searches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedrec.stores.batch_checks import KEY_BITS, IdKeys
from embedrec.stores.faiss.packed import PackedIds

SLOT_BITS = ~KEY_BITS
"""The low 32 bits of an entry: its slot."""
MAX_SLOTS = 2**32
FILTER_BITS_PER_ENTRY = 8
MIN_FILTER_LOG2 = 16


class KeyFilter:
    """A bit per value of a key's top `log2` bits, set for every key added: a clear bit
    means no entry has the key."""

    def __init__(self, runs: Sequence[np.ndarray]) -> None:
        """Sized for the entries of `runs` (sorted, keys in their top 32 bits) with room for
        four times as many, then rebuilt larger: with room for two times, the rebuilds made
        1M ids' lookups and adds in batches of 10,000 10-20% slower."""
        self.count = sum(map(len, runs))
        wanted = max(4 * self.count * FILTER_BITS_PER_ENTRY, 1 << MIN_FILTER_LOG2)
        self.log2 = min(int(wanted - 1).bit_length(), 32)
        self.room = (1 << self.log2) // FILTER_BITS_PER_ENTRY
        self._packed = np.zeros(1 << (self.log2 - 3), dtype=np.uint8)
        for run in runs:
            self._set(run)

    def _bits(self, keys: np.ndarray) -> np.ndarray:
        return (keys >> (64 - self.log2)) & ((1 << self.log2) - 1)

    def _set(self, keys: np.ndarray) -> None:
        """Set the bits of `keys` (one unbuffered OR per key: numpy's `ufunc.at` takes
        repeated bytes, in less time than OR-ing each byte's bits together first)."""
        bits = self._bits(keys)
        ones = np.left_shift(np.uint8(1), (bits & 7).astype(np.uint8))
        np.bitwise_or.at(self._packed, bits >> 3, ones)

    def add(self, keys: np.ndarray) -> None:
        """Entries with `keys` (sorted)."""
        self._set(keys)
        self.count += len(keys)

    def may_hold(self, keys: np.ndarray) -> np.ndarray:
        """Per key: False where no entry has it."""
        bits = self._bits(keys)
        return (self._packed[bits >> 3] >> (bits & 7).astype(np.uint8)) & 1 != 0


class IdIndex:
    """Lookups of ids among `ids` (the table's packed ids by slot)."""

    def __init__(self, ids: PackedIds, alive: np.ndarray) -> None:
        """Over the slots `alive` marks, their ids' keys made a chunk of ids at a time (never
        a Python string per id at once)."""
        self.ids = ids
        self._runs: list[np.ndarray] = []
        hashes = np.fromiter((hash(i) for chunk in ids.chunks() for i in chunk), np.int64, len(ids))
        live = np.flatnonzero(alive)
        self._filter = KeyFilter([])
        if live.size:
            self.add(IdKeys.of_hashes(hashes[live]), live)

    def repeated(self, alive: np.ndarray) -> str | None:
        """An id that two live slots of one run hold, None when each is held once."""
        for run in self._runs:
            keys = run & KEY_BITS
            same = keys[1:] == keys[:-1]
            shared = np.concatenate([same, [False]]) | np.concatenate([[False], same])
            slots = run[shared] & SLOT_BITS
            held = self.ids.take(slots[alive[slots]])
            if len(set(held)) < len(held):
                return next(i for i in held if held.count(i) > 1)
        return None

    def add(self, keys: IdKeys, slots: np.ndarray) -> None:
        """Entries for `slots` (ascending, below 2**32), which hold the ids of `keys`
        (already in `ids`)."""
        if slots.size and slots[-1] >= MAX_SLOTS:
            raise OverflowError(f"a FAISS store holds at most {MAX_SLOTS:,} slots")
        run = keys.hashes | slots[keys.order]  # sorted: equal keys in ascending slots
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="stable")
        self._runs.append(run)
        if self._filter.count + len(keys.hashes) > self._filter.room:
            self._filter = KeyFilter(self._runs)
        else:
            self._filter.add(keys.hashes)

    def find(self, ids: Sequence[str], alive: np.ndarray, keys: IdKeys | None = None) -> np.ndarray:
        """The slot of each id among the slots `alive` marks (the ids' `keys` given or made
        here), -1 where there is none."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not self._runs:
            return out
        keys = IdKeys.of(ids) if keys is None else keys
        maybe = self._filter.may_hold(keys.hashes)
        wanted, order = keys.hashes[maybe], keys.order[maybe]  # still sorted: searches resume
        if not wanted.size:
            return out
        for run in self._runs:
            left = np.searchsorted(run, wanted, "left")
            hit = np.flatnonzero((run[np.minimum(left, len(run) - 1)] & KEY_BITS) == wanted)
            if not hit.size:
                continue
            counts = np.searchsorted(run, wanted[hit] | SLOT_BITS, "right") - left[hit]
            asked = np.repeat(order[hit], counts)
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            slots = run[np.repeat(left[hit], counts) + np.arange(len(asked)) - starts] & SLOT_BITS
            live = alive[slots]
            found = self.ids.take(slots[live])
            for q, s, rid in zip(asked[live].tolist(), slots[live].tolist(), found, strict=True):
                if rid == ids[q]:
                    out[q] = s
        return out
