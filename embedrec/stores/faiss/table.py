"""The records beside a FAISS index: ids and metadata at positions ("slots") aligned with
the index's vectors, tombstones, and the caches derived from them.

Records live at slots 0..ntotal-1 in insertion order. A delete or an overwrite marks the old
slot dead (`alive` False); every search leaves dead slots out through a selector until a
compaction drops them. Ids are packed (`PackedIds`) and metadata lives in columns
(`MetaColumns`); both only grow, so a dead slot keeps its id and values until the
compaction. The caches (the fields in use, filter masks, the slots of excluded-id sets) are
valid until the next write, which calls `changed()`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection, Sequence

import numpy as np

from embedrec.stores.batch_checks import CheckedMetadata, IdKeys, Utf8
from embedrec.stores.errors import CorruptStore
from embedrec.stores.faiss.columns import MetaColumns
from embedrec.stores.faiss.id_index import IdIndex
from embedrec.stores.faiss.packed import PackedIds, grown
from embedrec.stores.faiss.planner import Selection
from embedrec.stores.filters import Node

MASK_CACHE = 128
EXCLUDED_CACHE = 4096


class SlotTable:
    """Ids and metadata by slot, with the id -> slot map and the caches derived from them.
    Not locked itself: the store's read/write lock guards it with the index."""

    def __init__(self, ids: PackedIds | None = None, columns: MetaColumns | None = None) -> None:
        """Over saved `ids` (a dead slot's empty) and `columns`; empty when None."""
        self.ids = ids if ids is not None else PackedIds.of([])
        self.columns = columns if columns is not None else MetaColumns()
        self.alive = self._alive_room = self.ids.nonempty()
        self.dead = len(self.ids) - int(np.count_nonzero(self.alive))
        self._index: IdIndex | None = None
        self._fields: frozenset[str] | None = None
        self._masks: dict[str, Selection] = {}
        self._live: Selection | None = None
        self._excluded: dict[frozenset[str], np.ndarray] = {}
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
            index = IdIndex(self.ids, self.alive)
            twice = index.repeated(self.alive)
            if twice is not None:
                raise CorruptStore(f"id {twice!r} is held by two slots")
            self._index = index
        return self._index

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The slot of each id, -1 where the store has none."""
        return self.index().find(ids, self.alive)

    def live_ids(self) -> list[str]:
        return list(itertools.compress(self.ids.strings(), self.alive))

    def changed(self) -> None:
        """After a write: every cache is stale."""
        self._fields = None
        self._live = None
        self._masks.clear()
        self._excluded.clear()

    def append(
        self, ids: list[str], keys: IdKeys, metadata: CheckedMetadata, packed: Utf8 | None = None
    ) -> None:
        """New records (with their ids' `keys`, and the ids `packed` where given) at the next
        slots; an id already present is killed first."""
        index = self.index()
        old = index.find(ids, self.alive, keys)
        self.kill(old[old >= 0].tolist())
        start = len(self.ids)
        self.columns.append(metadata)
        self.ids.extend(ids, packed)
        end = start + len(ids)
        # with room to grow: a concatenation copied every slot's flag on each upsert
        self._alive_room = grown(self._alive_room, start, end, False)
        self._alive_room[start:end] = True
        self.alive = self._alive_room[:end]
        index.add(keys, np.arange(start, end, dtype=np.int64))
        self.changed()

    def kill(self, slots: list[int]) -> None:
        self.alive[slots] = False
        self.dead += len(slots)
        if slots:
            self.changed()

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def keep(self, live: np.ndarray) -> None:
        """Keep only the slots `live`, renumbered from 0 (after a compaction)."""
        self.ids = self.ids.taken(live)
        self.columns = self.columns.taken(live)
        self.alive = self._alive_room = np.ones(len(self.ids), dtype=bool)
        self._index = None  # made again on first use
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

    def slots_of(self, sets: Sequence[Collection[str]]) -> list[np.ndarray]:
        """The live slots of each set of ids. A frozenset's are cached until the next write:
        a serving process excludes the same seen-item sets again and again. The sets not
        cached are looked up together, in one `find` (whose fixed cost is about that of 70
        ids in it)."""
        cached = self._excluded
        out = [cached.get(ids) if isinstance(ids, frozenset) else None for ids in sets]
        missing = [n for n, slots in enumerate(out) if slots is None]
        if not missing:
            return out  # type: ignore[return-value]
        asked = [list(sets[n]) for n in missing]
        found = self.find([i for ids in asked for i in ids])
        ends = np.cumsum([len(ids) for ids in asked]).tolist()
        for n, start, end in zip(missing, [0, *ends], ends, strict=False):
            part = found[start:end]
            out[n] = slots = part[part >= 0]
            if isinstance(sets[n], frozenset):
                with self._cache_lock:
                    if len(cached) >= EXCLUDED_CACHE:
                        cached.pop(next(iter(cached)))
                    cached[sets[n]] = slots  # type: ignore[index]
        return out  # type: ignore[return-value]
