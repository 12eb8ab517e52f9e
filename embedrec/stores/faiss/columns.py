"""A FAISS store's metadata, held column by column over its slots, and the filter language
evaluated over those columns.

Each field is a handful of numpy arrays over slots: its value kind per slot (absent, bool,
int, float, str, list of str), the numbers (as float64, exact for ints within +-2**53), and
codes into the field's string dictionary (`Vocab`) for strings and 0/1 for booleans; list
elements sit in two more arrays (slot, code), in slot order. A filter is a few numpy
operations over them (`evaluate`), and a hit's metadata dict is made only when it is read
(`rows`). Columns only grow: a write appends slots and never changes a slot's values (a
delete is the slot table's tombstone), and a compaction makes a new `MetaColumns`, so a
search can read its hits' metadata later and still see the moment it ran.

Why: a Python dict per record took about twice the memory of the vectors at 100k x 128
with 3 fields, four seconds to reload a 1M store, and most of an upsert's time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from embedrec.stores.batch_checks import CheckedMetadata, Column, plain_columns
from embedrec.stores.faiss.packed import grown, pack, unpack
from embedrec.stores.filters import COMPARE, SET_OPS, And, Cond, Node, Scalar, is_number
from embedrec.stores.results import FrozenMetadata
from embedrec.stores.text import ListColumn

ABSENT, BOOL, INT, FLOAT, STR, LIST = range(6)
KIND_OF: dict[type, int] = {type(None): ABSENT, bool: BOOL, int: INT, float: FLOAT, str: STR}
KIND_OF[list] = LIST


UNSET: dict[type, Any] = {np.float64: np.nan, np.int32: -1}


def unset(dtype: type, n: int) -> np.ndarray:
    """An array of n unset values that takes no memory (a read-only broadcast)."""
    return np.broadcast_to(np.array(UNSET[dtype], dtype=dtype), (n,))


class Numbering(dict[str, int]):
    """str -> code, numbering a string it has not seen as it is looked up (`__missing__`):
    one dict lookup per value, in C, where finding the new strings first and then looking
    each value up took two passes (0.05 s against 0.03 s for 1M values of a few strings)."""

    __slots__ = ("strings",)

    def __init__(self, strings: list[str]) -> None:
        super().__init__(zip(strings, range(len(strings)), strict=True))
        self.strings = strings

    def __missing__(self, s: str) -> int:
        self[s] = code = len(self.strings)
        self.strings.append(s)
        return code


SAMPLE = 64
"""The first values of a batch whose new strings say whether most of its strings are new."""


class Vocab:
    """A field's strings, each once, numbered in order of first appearance. Read from a
    saved file as packed UTF-8 (bytes, offsets), decoded on first use."""

    def __init__(self) -> None:
        self._strings: list[str] | None = []
        self._packed: tuple[np.ndarray, np.ndarray] | None = None
        """The first strings packed: as read from a file, or as the last `pack` made them."""
        self._index: Numbering | None = None

    def __len__(self) -> int:
        """How many strings (a saved dictionary's without decoding it)."""
        if self._strings is None:
            return len(self._packed[1]) - 1  # type: ignore[index]
        return len(self._strings)

    @classmethod
    def packed(cls, data: np.ndarray, offsets: np.ndarray) -> Vocab:
        vocab = cls()
        vocab._strings = None
        vocab._packed = (data, offsets)
        return vocab

    @property
    def strings(self) -> list[str]:
        if self._strings is None:
            self._strings = unpack(*self._packed)  # type: ignore[misc]
        return self._strings

    def index(self) -> Numbering:
        if self._index is None:
            self._index = Numbering(self.strings)
        return self._index

    def find(self, s: str) -> int | None:
        return self.index().get(s)

    def codes(self, values: Iterable[str]) -> np.ndarray:
        """The codes of `values`, numbering the strings not seen before: one lookup per
        value in C, which numbers a new string (`Numbering.__missing__`, a Python call)
        as it misses. Where the first values are mostly new strings (a field of distinct
        titles), the batch's new strings are numbered together first (`_number_new`): a
        Python call per string took most of such a batch's time."""
        values = values if isinstance(values, list) else list(values)
        index = self.index()
        head = values[:SAMPLE]
        if 4 * len(set(itertools.filterfalse(index.__contains__, head))) > len(head):
            numbered = self._number_new(values)
            if numbered is not None:
                return numbered
        return np.fromiter(map(index.__getitem__, values), np.int32, len(values))

    def _number_new(self, values: list[str]) -> np.ndarray | None:
        """Number the strings of `values` not seen before, in C, in order of first
        appearance; where every value is new and distinct, their codes (the order they
        came in, without a lookup), else None. All new: added at once, then counted (a
        value twice takes them out again, to number the distinct ones)."""
        index = self.index()
        strings, start = index.strings, len(index.strings)
        if not any(map(index.__contains__, values)):
            index.update(zip(values, range(start, start + len(values)), strict=True))
            if len(index) - start == len(values):
                strings.extend(values)
                return np.arange(start, start + len(values), dtype=np.int32)
            for value in dict.fromkeys(values):  # a value twice: numbered again below
                del index[value]
        new = list(itertools.filterfalse(index.__contains__, dict.fromkeys(values)))
        index.update(zip(new, range(start, start + len(new)), strict=True))
        strings.extend(new)
        return None

    def pack(self) -> tuple[np.ndarray, np.ndarray]:
        """The strings packed. Strings are only ever added, so the last packing (or the
        file's) is extended by those added since: packing every string again on each save
        took about 40% of a 100k-record store's flush with a field of distinct titles
        (cProfile)."""
        if self._strings is None:  # never decoded, so none added
            return self._packed  # type: ignore[return-value]
        data, offsets = self._packed or (np.zeros(0, np.uint8), np.zeros(1, np.int64))
        if len(offsets) - 1 < len(self._strings):
            more, bounds = pack(self._strings[len(offsets) - 1 :])
            data = np.concatenate([data, more])
            offsets = np.concatenate([offsets, bounds[1:] + offsets[-1]])
            self._packed = (data, offsets)
        return data, offsets


class Field:
    """One metadata field over slots (see the module's docstring)."""

    def __init__(self) -> None:
        self.kind = np.zeros(0, dtype=np.int8)
        self.num = unset(np.float64, 0)
        self.code = unset(np.int32, 0)
        self.list_slots = np.empty(0, dtype=np.int64)
        self.list_codes = np.empty(0, dtype=np.int32)
        self.list_used = 0
        self.vocab = Vocab()

    def reserve(self, used: int, need: int) -> None:
        """Room for slots up to `need`; `num` and `code` stay unset views (no memory) until
        the field holds a number, or a string or boolean."""
        self.kind = grown(self.kind, used, need, ABSENT)
        self.num = self._room(self.num, used, np.float64)
        self.code = self._room(self.code, used, np.int32)

    def _room(self, array: np.ndarray, used: int, dtype: type) -> np.ndarray:
        if array.strides == (0,):
            return array if array.size == self.kind.size else unset(dtype, self.kind.size)
        return grown(array, used, self.kind.size, UNSET[dtype])

    def _set(self, name: str) -> np.ndarray:
        """`num` or `code`, made real and writable over the capacity before a write."""
        array = getattr(self, name)
        if not array.flags.writeable:  # unset (a broadcast) or a saved file's map
            real = np.full(self.kind.size, UNSET[array.dtype.type], dtype=array.dtype)
            real[: array.size] = array
            setattr(self, name, real)
            array = real
        return array

    def put(self, start: int, column: Column) -> None:
        """Write a batch's `column` at slots start, start + 1, ..."""
        values = column.values
        if len(column.kinds) == 1:
            (kind,) = column.kinds
            given = values if column.numbers is None else column.numbers
            self._put_kind(KIND_OF[kind], slice(start, start + len(values)), given)
            return
        per_row = np.fromiter(map(KIND_OF.__getitem__, map(type, values)), np.int8, len(values))
        for kind in np.unique(per_row).tolist():
            rows = np.flatnonzero(per_row == kind)
            self._put_kind(kind, start + rows, [values[n] for n in rows.tolist()])

    def _put_kind(
        self, kind: int, slots: np.ndarray | slice, values: list[Any] | np.ndarray | ListColumn
    ) -> None:
        if kind == ABSENT:
            return
        self.kind[slots] = kind
        if kind in (INT, FLOAT):
            self._set("num")[slots] = values
        elif kind == BOOL:
            self._set("code")[slots] = values
        elif kind == STR:
            self._set("code")[slots] = self.vocab.codes(values)
        else:
            if isinstance(slots, slice):
                slots = np.arange(slots.start, slots.stop)
            lists = values if isinstance(values, ListColumn) else ListColumn.of(values)
            self._append_list(np.repeat(slots, lists.lengths), self.vocab.codes(lists.items))

    def _append_list(self, slots: np.ndarray, codes: np.ndarray) -> None:
        used, need = self.list_used, self.list_used + len(slots)
        self.list_slots = grown(self.list_slots, used, need, 0)
        self.list_codes = grown(self.list_codes, used, need, -1)
        self.list_slots[used:need] = slots
        self.list_codes[used:need] = codes
        self.list_used = need

    def lists(self) -> tuple[np.ndarray, np.ndarray]:
        return self.list_slots[: self.list_used], self.list_codes[: self.list_used]

    def values(self, slots: np.ndarray) -> list[Any]:
        """The field's value at each slot, None where absent."""
        kinds = self.kind[slots]
        if not kinds.size or (kinds == kinds[0]).all():  # the common case, without a sort
            return self._values_of(int(kinds[0]), slots) if kinds.size else []
        out: list[Any] = [None] * len(slots)
        for kind in np.unique(kinds).tolist():
            at = np.flatnonzero(kinds == kind).tolist()
            for n, v in zip(at, self._values_of(kind, slots[at]), strict=True):
                out[n] = v
        return out

    def _values_of(self, kind: int, slots: np.ndarray) -> list[Any]:
        if kind == ABSENT:
            return [None] * len(slots)
        if kind == INT:
            return self.num[slots].astype(np.int64).tolist()
        if kind == FLOAT:
            return self.num[slots].tolist()
        if kind == BOOL:
            return (self.code[slots] != 0).tolist()
        strings = self.vocab.strings
        if kind == STR:
            return list(map(strings.__getitem__, self.code[slots].tolist()))
        list_slots, list_codes = self.lists()
        starts = np.searchsorted(list_slots, slots, "left").tolist()
        ends = np.searchsorted(list_slots, slots, "right").tolist()
        return [
            list(map(strings.__getitem__, list_codes[a:b].tolist()))
            for a, b in zip(starts, ends, strict=True)
        ]

    def taken(self, slots: np.ndarray) -> Field:
        """The field at `slots` only, renumbered from 0 (a compaction)."""
        out = Field()
        out.vocab = self.vocab
        out.kind = self.kind[slots]
        out.num = unset(np.float64, len(slots)) if self.num.strides == (0,) else self.num[slots]
        out.code = unset(np.int32, len(slots)) if self.code.strides == (0,) else self.code[slots]
        list_slots, list_codes = self.lists()
        if list_slots.size:
            new_slot = np.full(int(slots.max()) + 1 if slots.size else 0, -1, dtype=np.int64)
            new_slot[slots] = np.arange(len(slots))
            keep = list_slots < len(new_slot)
            keep[keep] = new_slot[list_slots[keep]] >= 0
            moved = new_slot[list_slots[keep]]
            order = np.argsort(moved, kind="stable")
            out._append_list(moved[order], list_codes[keep][order])
        return out

    # -- the filter language over this field ----------------------------------------------

    def eq_any(self, targets: Sequence[Scalar], n: int) -> np.ndarray:
        """Slots where the value (or any list element) equals one of the targets."""
        kind = self.kind[:n]
        out = np.zeros(n, dtype=bool)
        nums = [t for t in targets if is_number(t)]
        bools = [int(t) for t in targets if isinstance(t, bool)]
        codes = [c for t in targets if isinstance(t, str) and (c := self.vocab.find(t)) is not None]
        if nums:
            out |= np.isin(self.num[:n], np.asarray(nums, dtype=np.float64))
        if bools:
            out |= np.isin(self.code[:n], bools) & (kind == BOOL)
        if codes:
            out |= np.isin(self.code[:n], codes) & (kind == STR)
            list_slots, list_codes = self.lists()
            if list_slots.size:
                out[list_slots[np.isin(list_codes, codes)]] = True
        return out

    def cond(self, c: Cond, n: int) -> np.ndarray:
        if c.op == "$exists":
            present = self.kind[:n] != ABSENT
            return present if c.value else ~present
        if c.op in ("$eq", "$ne", "$in", "$nin"):
            hit = self.eq_any(c.value if c.op in SET_OPS else (c.value,), n)
            return hit if c.op in ("$eq", "$in") else ~hit
        with np.errstate(invalid="ignore"):  # NaN: no number there, compares False
            return COMPARE[c.op](self.num[:n], c.value)


class MetaColumns:
    """The metadata of slots 0..n-1, field by field."""

    def __init__(self, n: int = 0, fields: dict[str, Field] | None = None) -> None:
        self.n = n
        self.fields = fields if fields is not None else {}

    @classmethod
    def of_rows(cls, rows: Sequence[Mapping[str, Any] | None]) -> MetaColumns:
        """Columns of rows of checked values (a saved store's, or a test's)."""
        columns = cls()
        checked = plain_columns(rows)
        if checked is None:
            raise ValueError("rows of metadata that a store would not have taken")
        columns.append(checked)
        return columns

    def append(self, metadata: CheckedMetadata) -> None:
        """A checked batch's metadata at the next slots."""
        start, end = self.n, self.n + len(metadata)
        for field in self.fields.values():
            field.reserve(start, end)
        lists = {name: field.list_used for name, field in self.fields.items()}
        try:
            for name, column in metadata.columns.items():
                field = self.fields.get(name)
                if field is None:
                    field = self.fields[name] = Field()
                    field.reserve(0, end)
                field.put(start, column)
        except BaseException:  # leave no values past n for the next append to inherit
            for name, field in self.fields.items():
                field.kind[start:end] = ABSENT
                field.list_used = lists.get(name, 0)
            raise
        self.n = end

    def rows(self, slots: Sequence[int] | np.ndarray) -> list[FrozenMetadata]:
        """The metadata dicts of `slots`, made now."""
        at = np.asarray(slots, dtype=np.int64)
        out: list[dict[str, Any]] = [{} for _ in range(len(at))]
        for name, field in self.fields.items():
            for row, value in zip(out, field.values(at), strict=True):
                if value is not None:
                    row[name] = value
        return list(map(FrozenMetadata, out))

    def taken(self, slots: np.ndarray) -> MetaColumns:
        return MetaColumns(len(slots), {k: f.taken(slots) for k, f in self.fields.items()})

    def present(self, live: np.ndarray) -> frozenset[str]:
        """The fields that some live slot holds."""
        n = self.n
        return frozenset(k for k, f in self.fields.items() if ((f.kind[:n] != ABSENT) & live).any())

    def evaluate(self, node: Node, live: np.ndarray | None = None) -> np.ndarray:
        """The slots that satisfy `node` (and are `live`, where given) as a bool mask."""
        mask = self._eval(node)
        return mask & live if live is not None else mask

    def _eval(self, node: Node) -> np.ndarray:
        if isinstance(node, Cond):
            field = self.fields.get(node.field)
            if field is not None:
                return field.cond(node, self.n)
            absent = node.op in ("$ne", "$nin") or (node.op == "$exists" and not node.value)
            return np.full(self.n, absent, dtype=bool)
        masks = [self._eval(n) for n in node.items]
        if not masks:
            return np.ones(self.n, dtype=bool)
        reduce = np.logical_and.reduce if isinstance(node, And) else np.logical_or.reduce
        return reduce(masks)
