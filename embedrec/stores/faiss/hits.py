"""FAISS's answer (distances and slot labels, padded with -1) as `Hits`, without a Python
object per hit.

The metadata is left to be made on first access from the table's columns as they stood at
the search (columns only grow, and a compaction makes new ones, so reading later still sees
the search's moment): making each hit's dict costs more than its id, and many callers never
read it. In an answer of up to `SHARED_METADATA` hits, the first row whose metadata is read
reads every row's in one pass over the columns (`AnswerMetadata`): a served batch reads all
its rows, and each field's column reads cost about the same for one row as for sixteen. A
hit's id is decoded from the table's packed ids (`PackedIds.take`, about 2 µs for a query's
ten, where a fancy index into an object array of id strings took 0.3 but cost a Python
string per record); only the hits' own ids are decoded. A few hits are then built row by row
from lists, a batch's with `map` over its rows.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import numpy as np

from embedrec.stores.base import Hits
from embedrec.stores.faiss.table import SlotTable
from embedrec.stores.results import FrozenMetadata

SMALL_RESULT = 64
"""Up to this many labels in one answer, hits are built row by row."""
SHARED_METADATA = 4096
"""Up to this many labels in one answer, its rows' metadata is read together."""

RowsReader = Callable[[Sequence[int]], list[FrozenMetadata]]


class AnswerMetadata:
    """The metadata of every row of one answer, read together when the first row's is asked
    for. Two threads that ask at once may both read it: the same rows, harmlessly."""

    __slots__ = ("_read", "_rows", "_slots")

    def __init__(self, read: RowsReader, slots: list[list[int]]) -> None:
        self._read, self._slots = read, slots
        self._rows: list[list[FrozenMetadata]] | None = None

    def row(self, n: int) -> list[FrozenMetadata]:
        rows = self._rows
        if rows is None:
            read = self._read([s for row in self._slots for s in row])
            ends = list(itertools.accumulate(map(len, self._slots)))
            rows = self._rows = [read[a:b] for a, b in zip([0, *ends], ends, strict=False)]
        return rows[n]


def _few_hits(table: SlotTable, distances: np.ndarray, labels: np.ndarray, l2: bool) -> list[Hits]:
    names = table.ids.take(labels)  # a -1 label reads "": left out below
    scores = (-distances if l2 else distances).tolist()
    kept = labels.tolist()
    for n, row in enumerate(kept):  # not zip(strict=True): a microsecond a call
        if -1 in row:
            scores[n] = [d for d, s in zip(scores[n], row, strict=True) if s >= 0]
            names[n] = [i for i, s in zip(names[n], row, strict=True) if s >= 0]
            kept[n] = [s for s in row if s >= 0]
    if len(kept) == 1:  # one query's: nothing to share
        return [Hits(names[0], scores[0], functools.partial(table.columns.rows, kept[0]))]
    shared = AnswerMetadata(table.columns.rows, kept).row
    partial = functools.partial
    return [Hits(names[n], scores[n], partial(shared, n)) for n in range(len(kept))]


def hits_of(table: SlotTable, distances: np.ndarray, labels: np.ndarray, *, l2: bool) -> list[Hits]:
    """Each row's hits; scores are FAISS's, negated for l2 so that higher is better."""
    if labels.size <= SMALL_RESULT:
        return _few_hits(table, distances, labels, l2)
    ids, rows = table.ids, table.columns.rows
    scores = -distances if l2 else distances
    padded = np.flatnonzero((labels < 0).any(axis=1)).tolist()
    shared = labels.size <= SHARED_METADATA
    if shared:
        kept = labels.tolist()
        for n in padded:
            kept[n] = [s for s in kept[n] if s >= 0]
        row = AnswerMetadata(rows, kept).row
        metadata = [functools.partial(row, n) for n in range(len(kept))]
    else:
        metadata = [functools.partial(rows, slots) for slots in labels]
    out = list(map(Hits, ids.take(labels), scores.tolist(), metadata))
    for n in padded:
        found = labels[n] >= 0
        lazy = metadata[n] if shared else functools.partial(rows, labels[n][found])
        out[n] = Hits(ids.take(labels[n][found]), scores[n][found].tolist(), lazy)
    return out
