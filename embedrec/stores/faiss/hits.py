"""FAISS's answer (distances and slot labels, padded with -1) as `Hits`, without a Python
object per hit.

The metadata is left to be read on first access from the table's snapshot: touching each
hit's metadata costs as much again as its id (cache misses, mostly), and many callers never
read it. A batch also maps its labels to ids with one fancy index into that snapshot. A few
hits are read from the lists directly, since numpy's per-call cost, on caches the search has
just evicted, would dominate; and eagerly when no snapshot is built, since building one costs
O(n) after every write.
"""

from __future__ import annotations

import functools

import numpy as np

from embedrec.stores.base import FrozenMetadata, Hits
from embedrec.stores.faiss.table import SlotTable

SMALL_RESULT = 64
"""Up to this many labels in one answer, hits are built from the lists, not the snapshot."""


def _metadata_of(
    snapshot: np.ndarray, slots: np.ndarray | list[int]
) -> list[FrozenMetadata | None]:
    return snapshot[slots].tolist()


def _few_hits(table: SlotTable, distances: np.ndarray, labels: np.ndarray, l2: bool) -> list[Hits]:
    ids, meta = table.ids, table.meta
    built = table.built_snapshot()
    snapshot = built[1] if built is not None else None
    out = []
    for row, sc in zip(labels.tolist(), distances.tolist(), strict=True):
        if -1 in row:
            sc = [d for d, s in zip(sc, row, strict=True) if s >= 0]
            row = [s for s in row if s >= 0]
        metadata = (
            [meta[s] for s in row]
            if snapshot is None
            else functools.partial(_metadata_of, snapshot, row)
        )
        out.append(Hits([ids[s] for s in row], [-d for d in sc] if l2 else sc, metadata))
    return out


def hits_of(table: SlotTable, distances: np.ndarray, labels: np.ndarray, *, l2: bool) -> list[Hits]:
    """Each row's hits; scores are FAISS's, negated for l2 so that higher is better."""
    if labels.size <= SMALL_RESULT:
        return _few_hits(table, distances, labels, l2)
    id_array, meta_array = table.snapshot()
    lazy_metadata = functools.partial(functools.partial, _metadata_of, meta_array)
    scores = (-distances if l2 else distances).tolist()
    out = list(map(Hits, id_array[labels].tolist(), scores, map(lazy_metadata, labels)))
    for n in np.flatnonzero((labels < 0).any(axis=1)).tolist():
        out[n] = out[n].take(np.flatnonzero(labels[n] >= 0).tolist())
    return out
