"""A batch's metadata as columns, one per field, checked a column at a time.

`plain_columns` turns the rows of a batch (dicts, or None for no metadata) into columns, or
takes the batch's columns as given ({field: a value per record, None where a record has
none}: no dict per record to make or take apart), and checks each column with a few passes
in C: a column of one kind (the common case: every record's "year" an int) is checked as a
whole (numbers in one numpy conversion, strings by one join), so a batch costs about one
Python-level step per value instead of several. Anything it cannot pass that way gets None,
and the per-record checks (`batch_checks.check_metadata`) then convert it or name the
record, field and reason.

`CheckedMetadata` holds the columns: a FAISS store appends them as they are, and other
stores read it as a sequence of dicts, each made when it is read.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, overload

import numpy as np

from embedrec.stores.results import MetadataValue
from embedrec.stores.text import encodable

MAX_INT = 2**53
"""Metadata integers lie within +-2**53: every store must keep them exact, and Pinecone holds
numbers as float64, in which 2**53 + 1 reads back as 2**53."""
NONE = type(None)
NO_METADATA = frozenset({dict, NONE})
MetadataInput = Sequence[Mapping[str, Any] | None] | Mapping[str, Sequence[Any]] | None
"""Metadata as callers give it: a dict (or None) per record, or columns of values (None
where a record has none), or None for none."""


@dataclass(frozen=True, slots=True, eq=False)
class Column:
    """One field over a batch: each record's value, None where the record lacks the field
    (a value is never None), and the types found among them (NoneType where some record
    lacks it). Lists are the column's own, never the caller's. A column given as a numpy
    array of numbers or booleans keeps it as its values (`listed` makes them Python's)."""

    values: list[MetadataValue | None] | np.ndarray
    kinds: frozenset[type]
    numbers: np.ndarray | None = None
    """The values as float64 where they are all int or all float (and none is missing)."""

    def listed(self) -> list[MetadataValue | None]:
        values = self.values
        return values.tolist() if isinstance(values, np.ndarray) else values

    def at(self, i: int) -> MetadataValue | None:
        values = self.values
        return values[i].item() if isinstance(values, np.ndarray) else values[i]


class CheckedMetadata(Sequence[dict[str, MetadataValue]]):
    """Checked metadata of n records as columns (field -> `Column`), in the order the fields
    were first seen; read as a sequence, a record's dict is made when it is read."""

    __slots__ = ("columns", "n")

    def __init__(self, columns: dict[str, Column], n: int) -> None:
        self.columns = columns
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> dict[str, MetadataValue]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, MetadataValue]]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return list(itertools.islice(self, *i.indices(self.n)))
        if not -self.n <= i < self.n:
            raise IndexError(f"record {i} of {self.n}")
        return _row(self.columns, [c.at(i) for c in self.columns.values()])

    def __iter__(self) -> Iterator[dict[str, MetadataValue]]:
        if not self.columns:
            return (dict() for _ in range(self.n))
        values = [c.listed() for c in self.columns.values()]
        return map(_row, repeat(self.columns), zip(*values, strict=True))

    def __repr__(self) -> str:
        return f"CheckedMetadata({list(self)!r})"


def _row(columns: dict[str, Column], values: Sequence[Any]) -> dict[str, MetadataValue]:
    return {k: v for k, v in zip(columns, values, strict=True) if v is not None}


def metadata_rows(metadata: MetadataInput) -> Sequence[Mapping[str, Any] | None] | None:
    """Metadata as a dict (or None) per record, made from columns where it is columns."""
    if not isinstance(metadata, Mapping):
        return metadata
    names = list(metadata)
    per_record = zip(*(_listed(v) for v in metadata.values()), strict=True)
    return [{k: v for k, v in zip(names, vs, strict=True) if v is not None} for vs in per_record]


def _listed(values: Sequence[Any]) -> list[Any]:
    """A column's values as a list, numpy's as Python values."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def plain_columns(metadata: Sequence[Any] | Mapping[str, Sequence[Any]]) -> CheckedMetadata | None:
    """The batch's metadata as checked columns, when every entry is a dict or None (or every
    column a sequence of values and None) whose keys are plain non-empty strings not starting
    with '$' and whose values are str (writable as UTF-8), int within +-2**53, finite float,
    bool or a list of such str; None otherwise (numpy scalars and tuples included: the
    per-record checks convert them). Columns are of equal length (`count_error`)."""
    if isinstance(metadata, Mapping):
        if not all(map(_plain_key, metadata)):
            return None
        made = {name: _given_column(values) for name, values in metadata.items()}
        n = len(next(iter(metadata.values()), ()))
        return CheckedMetadata(made, n) if all(made.values()) else None  # type: ignore[arg-type]
    kinds = set(map(type, metadata))
    if not kinds <= NO_METADATA:
        return None
    rows = [m or {} for m in metadata] if NONE in kinds else metadata
    first = next(filter(None, rows), {})
    columns = {name: _column(rows, name) for name in first}
    given = sum(map(len, rows))
    if _present(columns) != given:  # more fields than the first record's, or a None value
        names = set().union(*rows)
        if set(map(type, names)) - {str}:
            return None
        columns.update((name, _column(rows, name)) for name in sorted(names - first.keys()))
        if _present(columns) != given:
            return None
    if not all(map(_plain_key, columns)):
        return None
    out: dict[str, Column] = {}
    for name, (values, kinds_of) in columns.items():
        column = _plain_column(values, kinds_of)
        if column is None:
            return None
        out[name] = column
    return CheckedMetadata(out, len(rows))


def _given_column(values: Sequence[Any]) -> Column | None:
    """A column given as such: a numpy array of numbers or booleans is checked in numpy,
    anything else value by value as a list."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in ARRAY_KINDS:
        return _array_column(values)
    listed = values if type(values) is list else _listed(values)
    return _plain_column(*_typed(listed))


ARRAY_KINDS: dict[str, type] = {"b": bool, "i": int, "u": int, "f": float}


def _array_column(array: np.ndarray) -> Column | None:
    kind = ARRAY_KINDS[array.dtype.kind]
    if kind is bool:
        return Column(array, frozenset({bool}))
    if kind is int:
        fits = not array.size or (array.min() >= -MAX_INT and array.max() <= MAX_INT)
    else:
        fits = bool(np.isfinite(array).all())
    if not fits:
        return None
    return Column(array, frozenset({kind}), array.astype(np.float64))


def _column(rows: Sequence[dict[str, Any]], name: str) -> tuple[list[Any], frozenset[type]]:
    """Each row's value of `name` (None where it has none) and their types, in C."""
    return _typed(list(map(dict.get, rows, repeat(name))))


def _typed(values: list[Any]) -> tuple[list[Any], frozenset[type]]:
    return values, frozenset(map(type, values))


def _present(columns: dict[str, tuple[list[Any], frozenset[type]]]) -> int:
    """How many values the columns hold (not None)."""
    return sum(
        len(values) - (len(_of_type(values, NONE)) if NONE in kinds else 0)
        for values, kinds in columns.values()
    )


def _plain_key(key: Any) -> bool:
    return type(key) is str and key != "" and key[0] != "$" and encodable(key)


def _plain_column(values: list[Any], kinds: frozenset[type]) -> Column | None:
    found = kinds - {NONE}
    if not found <= PLAIN_CHECKS.keys():
        return None
    if kinds == {int} or kinds == {float}:  # numbers, checked as one array
        numbers = _numbers(values, int in kinds)
        return None if numbers is None else Column(values, kinds, numbers)
    for kind in found:
        of_kind = values if len(kinds) == 1 else _of_type(values, kind)
        if not PLAIN_CHECKS[kind](of_kind):
            return None
    if list in found:
        values = [v.copy() if type(v) is list else v for v in values]
    return Column(values, kinds)


def _of_type(values: list[Any], kind: type) -> list[Any]:
    """The values of exactly `kind`, picked out without a Python call per value."""
    return list(itertools.compress(values, map(operator.is_, map(type, values), repeat(kind))))


def _texts(values: list[str]) -> bool:
    return encodable("".join(values))


def _numbers(values: list[Any], ints: bool) -> np.ndarray | None:
    """Ints (within +-2**53) or finite floats as float64 (exact for such ints); None if
    some are not."""
    try:
        array = np.array(values, dtype=np.int64 if ints else np.float64)
    except OverflowError:  # beyond int64, so beyond +-2**53 too
        return None
    if ints:
        fits = array.min() >= -MAX_INT and array.max() <= MAX_INT
        return array.astype(np.float64) if fits else None
    return array if np.isfinite(array).all() else None


def _ints(values: list[int]) -> bool:
    return _numbers(values, True) is not None


def _floats(values: list[float]) -> bool:
    """All finite: one sum, unless it is not finite (a NaN or inf, or finite values whose
    sum overflows), then value by value."""
    return math.isfinite(sum(values)) or _numbers(values, False) is not None


def _lists(values: list[list[Any]]) -> bool:
    items = list(itertools.chain.from_iterable(values))
    return set(map(type, items)) <= {str} and _texts(items)


PLAIN_CHECKS: dict[type, Callable[[list[Any]], bool]] = {
    str: _texts,
    bool: lambda values: True,
    int: _ints,
    float: _floats,
    list: _lists,
}
"""Whether a column's values of one kind are all plain (see `plain_columns`)."""
