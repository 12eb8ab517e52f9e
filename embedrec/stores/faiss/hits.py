"""FAISS's answer (distances and slot labels, padded with -1) as `Hits`, without a Python
object per hit.

The metadata is left to be made on first access from the table's columns as they stood at
the search (columns only grow, and a compaction makes new ones, so reading later still sees
the search's moment): making each hit's dict costs more than its id, and many callers never
read it. A hit's id is decoded from the table's packed ids (`PackedIds.take`, about 2 µs for
a query's ten, where a fancy index into an object array of id strings took 0.3 but cost a
Python string per record); only the hits' own ids are decoded. A few hits are then built
row by row from lists, a batch's with `map` over its rows.
"""

from __future__ import annotations

import functools

import numpy as np

from embedrec.stores.base import Hits
from embedrec.stores.faiss.table import SlotTable

SMALL_RESULT = 64
"""Up to this many labels in one answer, hits are built row by row."""


def _few_hits(table: SlotTable, distances: np.ndarray, labels: np.ndarray, l2: bool) -> list[Hits]:
    rows = table.columns.rows
    names = table.ids.take(labels)  # a -1 label reads "": left out below
    scores = (-distances if l2 else distances).tolist()
    out = []
    for n, row in enumerate(labels.tolist()):  # not zip(strict=True): a microsecond a call
        sc, hid = scores[n], names[n]
        if -1 in row:
            sc = [d for d, s in zip(sc, row, strict=True) if s >= 0]
            hid = [i for i, s in zip(hid, row, strict=True) if s >= 0]
            row = [s for s in row if s >= 0]
        out.append(Hits(hid, sc, functools.partial(rows, row)))
    return out


def hits_of(table: SlotTable, distances: np.ndarray, labels: np.ndarray, *, l2: bool) -> list[Hits]:
    """Each row's hits; scores are FAISS's, negated for l2 so that higher is better."""
    if labels.size <= SMALL_RESULT:
        return _few_hits(table, distances, labels, l2)
    lazy_metadata = functools.partial(functools.partial, table.columns.rows)
    ids = table.ids
    scores = -distances if l2 else distances
    out = list(map(Hits, ids.take(labels), scores.tolist(), map(lazy_metadata, labels)))
    for n in np.flatnonzero((labels < 0).any(axis=1)).tolist():
        found = labels[n][labels[n] >= 0]
        kept = scores[n][labels[n] >= 0].tolist()
        out[n] = Hits(ids.take(found), kept, lazy_metadata(found))
    return out
