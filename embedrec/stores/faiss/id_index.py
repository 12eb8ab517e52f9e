"""id -> slot for a FAISS store's records, without a Python object per id.

Each id's key (`IdKeys`: the top 32 bits of Python's own string hash, never saved, rebuilt
per process; an upserted batch's keys come from its duplicate check) sits with its slot in a
few sorted runs, merged as they grow (a binary counter: a run merges into the
one before it once that is at most twice its size, so each entry is merged O(log n) times).
A lookup finds equal keys by binary search and confirms each against the slot's packed id in
the table, so ids sharing a key cost one comparison each, never a wrong answer, and a dead slot
never matches. 16 bytes a record where a dict of str -> int took about 70 at 1M.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedrec.stores.batch_checks import IdKeys
from embedrec.stores.faiss.packed import PackedIds


class IdIndex:
    """Lookups of ids among `ids` (the table's packed ids by slot)."""

    def __init__(self, ids: PackedIds, alive: np.ndarray) -> None:
        """Over the slots `alive` marks, their ids' keys made a chunk of ids at a time (never
        a Python string per id at once)."""
        self.ids = ids
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        hashes = np.fromiter((hash(i) for chunk in ids.chunks() for i in chunk), np.int64, len(ids))
        live = np.flatnonzero(alive)
        if live.size:
            self.add(IdKeys.of_hashes(hashes[live]), live)

    def repeated(self, alive: np.ndarray) -> str | None:
        """An id that two live slots hold, None when each is held once."""
        for run_h, run_s in self._runs:
            same = run_h[1:] == run_h[:-1]
            shared = np.concatenate([same, [False]]) | np.concatenate([[False], same])
            slots = run_s[shared]
            held = self.ids.take(slots[alive[slots]])
            if len(set(held)) < len(held):
                return next(i for i in held if held.count(i) > 1)
        return None

    def add(self, keys: IdKeys, slots: np.ndarray) -> None:
        """Entries for `slots`, which hold the ids of `keys` (already in `ids`)."""
        run_h, run_s = keys.hashes, slots[keys.order]
        while self._runs and len(self._runs[-1][0]) <= 2 * len(run_h):
            last_h, last_s = self._runs.pop()
            merged_h = np.concatenate([last_h, run_h])
            order = np.argsort(merged_h, kind="stable")  # two sorted runs: a linear merge
            run_h, run_s = merged_h[order], np.concatenate([last_s, run_s])[order]
        self._runs.append((run_h, run_s))

    def find(self, ids: Sequence[str], alive: np.ndarray, keys: IdKeys | None = None) -> np.ndarray:
        """The slot of each id among the slots `alive` marks (the ids' `keys` given or made
        here), -1 where there is none."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not self._runs:
            return out
        keys = IdKeys.of(ids) if keys is None else keys
        order = keys.order  # sorted keys: numpy's binary searches resume, cache-warm
        wanted = keys.hashes
        for run_h, run_s in self._runs:
            left = np.searchsorted(run_h, wanted, "left")
            equal = run_h[np.minimum(left, len(run_h) - 1)] == wanted
            if not equal.any():
                continue
            hit = np.flatnonzero(equal)
            counts = np.searchsorted(run_h, wanted[hit], "right") - left[hit]
            asked = np.repeat(order[hit], counts)
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            at = np.repeat(left[hit], counts) + np.arange(len(asked)) - starts
            slots = run_s[at]
            live = alive[slots]
            found = self.ids.take(slots[live])
            for q, s, rid in zip(asked[live].tolist(), slots[live].tolist(), found, strict=True):
                if rid == ids[q]:
                    out[q] = s
        return out
