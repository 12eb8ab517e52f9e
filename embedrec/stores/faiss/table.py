"""The records beside a FAISS index: ids and metadata at positions ("slots") aligned with
the index's vectors, tombstones, and the caches derived from them.

Records live at slots 0..ntotal-1 in insertion order. A delete or an overwrite marks the old
slot dead (its id becomes None, `alive` False); every search leaves dead slots out through a
selector until a compaction drops them. Metadata lives in columns (`MetaColumns`), which
only grow, so a dead slot keeps its values until the compaction. The caches (the fields in
use, filter masks, the slots of excluded-id sets) are valid until the next write, which
calls `changed()`; the id array hits read from follows the appends (`id_array`).
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Collection, Sequence

import numpy as np

from embedrec.stores.batch_checks import CheckedMetadata, IdKeys
from embedrec.stores.errors import CorruptStore
from embedrec.stores.faiss.columns import MetaColumns
from embedrec.stores.faiss.id_index import IdIndex
from embedrec.stores.faiss.planner import Selection
from embedrec.stores.filters import Node

MASK_CACHE = 128
EXCLUDED_CACHE = 4096


class SlotTable:
    """Ids and metadata by slot, with the id -> slot map and the caches derived from them.
    Not locked itself: the store's read/write lock guards it with the index."""

    def __init__(self, ids: list[str | None], columns: MetaColumns | None = None) -> None:
        self.ids = ids
        self.columns = columns if columns is not None else MetaColumns()
        self.dead = ids.count(None)
        self.alive = (
            np.fromiter(map(operator.is_not, ids, itertools.repeat(None)), bool, len(ids))
            if self.dead
            else np.ones(len(ids), dtype=bool)
        )
        self._index: IdIndex | None = None
        self._fields: frozenset[str] | None = None
        self._masks: dict[str, Selection] = {}
        self._live: Selection | None = None
        self._excluded: dict[frozenset[str], np.ndarray] = {}
        self._id_array: np.ndarray | None = None
        self._id_room: np.ndarray | None = None  # _id_array is its first len(ids) entries
        self._cache_lock = threading.Lock()  # concurrent searches share the caches

    def __len__(self) -> int:
        """Slots, live and dead."""
        return len(self.ids)

    @property
    def live_count(self) -> int:
        return len(self.ids) - self.dead

    def index(self) -> IdIndex:
        """The id -> slot lookup, made on first use: a reopened store answers searches
        without it (at 1M records it takes about as long to make as the index to read)."""
        if self._index is None:
            index = IdIndex(self.ids, self.live_slots())
            twice = index.repeated()
            if twice is not None:
                raise CorruptStore(f"id {twice!r} is held by two slots")
            self._index = index
        return self._index

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The slot of each id, -1 where the store has none."""
        return self.index().find(ids)

    def live_ids(self) -> list[str]:
        return list(filter(None, self.ids))  # type: ignore[arg-type]  # ids are never ""

    def changed(self) -> None:
        """After a write: every cache is stale."""
        self._fields = None
        self._live = None
        self._masks.clear()
        self._excluded.clear()  # the id array is kept: `id_array`

    def append(self, ids: list[str], keys: IdKeys, metadata: CheckedMetadata) -> None:
        """New records (with their ids' `keys`) at the next slots; an id already present
        is killed first."""
        index = self.index()
        old = index.find(ids, keys)
        self.kill(old[old >= 0].tolist())
        start = len(self.ids)
        self.columns.append(metadata)
        self.ids.extend(ids)
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        index.add(keys, np.arange(start, start + len(ids), dtype=np.int64))
        self.changed()

    def kill(self, slots: list[int]) -> None:
        for s in slots:
            self.ids[s] = None
        self.alive[slots] = False
        self.dead += len(slots)
        if slots:
            self.changed()

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def keep(self, live: np.ndarray) -> None:
        """Keep only the slots `live`, renumbered from 0 (after a compaction)."""
        self.ids = [self.ids[s] for s in live.tolist()]
        self.columns = self.columns.taken(live)
        self.alive = np.ones(len(self.ids), dtype=bool)
        self._index = None  # made again on first use
        self._id_array = self._id_room = None
        self.dead = 0
        self.changed()

    def fields(self) -> frozenset[str]:
        """The metadata fields some live record holds."""
        if self._fields is None:
            self._fields = self.columns.present(self.alive)
        return self._fields

    def live(self) -> Selection:
        """Every live slot, cached until the next write."""
        if self._live is None:
            self._live = Selection(self.alive.copy(), self.live_count)
        return self._live

    def select(self, node: Node | None) -> Selection:
        """The slots a filter selects (every live one for None), cached until the next
        write: serving traffic repeats its filters, and evaluating one costs more than a
        small search. Keyed by repr, in which True and 1 differ (equal in Python)."""
        if node is None:
            return self.live()
        key = repr(node)
        found = self._masks.get(key)
        if found is None:
            found = Selection(self.columns.evaluate(node, self.alive))
            with self._cache_lock:
                if len(self._masks) >= MASK_CACHE:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = found
        return found

    def slots_of(self, ids: Collection[str]) -> np.ndarray:
        """The live slots of `ids`. A frozenset's are cached until the next write: a serving
        process excludes the same seen-item sets again and again."""
        slots = self._excluded.get(ids) if isinstance(ids, frozenset) else None
        if slots is None:
            found = self.find(list(ids))
            slots = found[found >= 0]
            if isinstance(ids, frozenset):
                with self._cache_lock:
                    if len(self._excluded) >= EXCLUDED_CACHE:
                        self._excluded.pop(next(iter(self._excluded)))
                    self._excluded[ids] = slots
        return slots

    def id_array(self) -> np.ndarray:
        """The ids as an object array over slots, so that mapping labels to ids is one
        fancy index in C rather than a Python lookup per hit (which costs more even for one
        query's ten, on caches its search has just evicted). Kept across writes, since making
        it again takes as long as hundreds of searches at 1M: appends extend it, with room
        to grow; a dead slot may keep its former id, which no search returns (searches leave
        dead slots out); a compaction drops it."""
        ids = self._id_array
        if ids is None or len(ids) != len(self.ids):
            with self._cache_lock:
                ids = self._extended_id_array()
        return ids

    def _extended_id_array(self) -> np.ndarray:
        n, room = len(self.ids), self._id_room
        done = 0 if self._id_array is None else len(self._id_array)
        if done < n:
            if room is None or len(room) < n:
                grown = np.empty(n if room is None else n + n // 4, dtype=object)
                if room is not None:
                    grown[:done] = room[:done]
                room = self._id_room = grown
            room[done:n] = self.ids[done:n]
            self._id_array = room[:n]
        return self._id_array
