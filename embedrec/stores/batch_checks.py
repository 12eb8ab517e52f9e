"""The checks of `VectorStore.upsert`: per record (`normalize_ids`, `check_metadata`, which
name the record, field and reason), and for a whole batch at once in passes that run in C
(`checked_ids`, `plain_columns`): the common batch (str ids; str, int, float, bool and
list-of-str values) passes at a small share of the per-record checks' cost (a Python call
per value). Anything else, and anything wrong, gets None from the batch checks, and the
per-record checks then convert it or name the record, field and reason.

Metadata is checked a column at a time: `plain_columns` turns the rows of a batch (dicts, or
None for no metadata) into columns, or takes the batch's columns as given ({field: a value
per record, None where a record has none}: no dict per record to make or take apart), and
checks each column whole (numbers in one numpy conversion, strings by one join), so a batch
costs about one Python-level step per value. `CheckedMetadata` holds the columns: a FAISS
store appends them as they are, and other stores read it as a dict per record, each made
when it is read. Ids are checked for repeats by sorting their keys (`IdKeys`), which a
FAISS store's id index keeps.

A `CheckedBatch` is a batch that passed them (`VectorStore.check_batch`), which
`VectorStore.upsert_checked` writes without checking it again."""

from __future__ import annotations

import itertools
import math
import operator
import reprlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, overload

import numpy as np

from embedrec.stores.errors import IdError, MetadataError, StoreError, VectorError
from embedrec.stores.results import MetadataValue
from embedrec.stores.text import ListColumn, encodable, normalize_ids, utf8_packed

MAX_INT = 2**53
"""Metadata integers lie within +-2**53: every store must keep them exact, and Pinecone holds
numbers as float64, in which 2**53 + 1 reads back as 2**53."""
NONE = type(None)
NO_METADATA = frozenset({dict, NONE})
MetadataInput = Sequence[Mapping[str, Any] | None] | Mapping[str, Sequence[Any]] | None
"""Metadata as callers give it: a dict (or None) per record, or columns of values (None
where a record has none), or None for none."""
Utf8 = tuple[np.ndarray, np.ndarray]
"""Strings packed: their UTF-8 bytes one after another and the n + 1 offsets bounding them."""


@dataclass(frozen=True, slots=True, eq=False)
class Column:
    """One field over a batch: each record's value, None where the record lacks the field
    (a value is never None), and the types found among them (NoneType where some record
    lacks it). Lists are the column's own, never the caller's (a column of lists alone is
    a `ListColumn`). A column given as a numpy array of numbers or booleans keeps it as its
    values (`listed` makes them Python's)."""

    values: list[MetadataValue | None] | np.ndarray | ListColumn
    kinds: frozenset[type]
    numbers: np.ndarray | None = None
    """The values as float64 where they are all int or all float (and none is missing)."""

    def listed(self) -> list[MetadataValue | None]:
        values = self.values
        if isinstance(values, np.ndarray):
            return values.tolist()
        return values if isinstance(values, list) else list(values)

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
    """The values and their types. A column of str alone (the most common) is found by
    counting them, and checked as text at once (`TEXT`): a set of a type per value took
    twice as long as the count."""
    if values and type(values[0]) is str and list(map(type, values)).count(str) == len(values):
        return values, TEXT if _texts(values) else frozenset({str})
    return values, frozenset(map(type, values))


TEXT = frozenset({str})
"""The kinds of a column `_typed` found to be str alone and checked as text: this object
itself, so that `_plain_column` does not check it again."""
LISTS = frozenset({list})
"""The kinds of a column of lists alone (a `ListColumn` once checked)."""


def _present(columns: dict[str, tuple[list[Any], frozenset[type]]]) -> int:
    """How many values the columns hold (not None)."""
    return sum(
        len(values) - (len(_of_type(values, NONE)) if NONE in kinds else 0)
        for values, kinds in columns.values()
    )


def _plain_key(key: Any) -> bool:
    return type(key) is str and key != "" and key[0] != "$" and encodable(key)


def _plain_column(values: list[Any], kinds: frozenset[type]) -> Column | None:
    if kinds is TEXT:
        return Column(values, kinds)
    if kinds == LISTS:
        lists = ListColumn.of(values)
        return Column(lists, kinds) if _texts(lists.items) else None
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


def _texts(values: Iterable[Any]) -> bool:
    """All str (`join` takes only str) and text that UTF-8 can write."""
    try:
        return encodable("".join(values))
    except TypeError:
        return False


def _numbers(values: list[Any], ints: bool) -> np.ndarray | None:
    """Values all of type int (within +-2**53) or all float (finite) as float64 (exact for
    such ints); None if some are not. `fromiter` (half the time of `np.array` on a list)
    would convert a str or a float to int64 too: the values' types are checked first."""
    try:
        array = np.fromiter(values, dtype=np.int64 if ints else np.float64, count=len(values))
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
    return _texts(itertools.chain.from_iterable(values))


PLAIN_CHECKS: dict[type, Callable[[list[Any]], bool]] = {
    str: _texts,
    bool: lambda values: True,
    int: _ints,
    float: _floats,
    list: _lists,
}
"""Whether a column's values of one kind are all plain (see `plain_columns`)."""


REFUSALS = (IdError, MetadataError, VectorError)
"""What the checks raise for one record a store will not hold (the others are the batch's)."""

Refusal = tuple[int, StoreError]
"""A record of a batch that fails the checks: its position and the error naming it."""


@dataclass(frozen=True, slots=True, eq=False)
class CheckedBatch:
    """Records that passed every check of `VectorStore.upsert`, made by
    `VectorStore.check_batch` (or `check_records`) of a store with this `dim`: ids unique
    non-empty str, finite float32 vectors (unit rows when `unit`), metadata as stores keep
    it (in columns, read as a dict per record). `VectorStore.upsert_checked` writes it
    without checking any record again."""

    ids: list[str]
    keys: IdKeys
    vectors: np.ndarray
    metadata: CheckedMetadata
    dim: int
    unit: bool
    """The rows were scaled to unit length (for a cosine store)."""
    packed_ids: Utf8 | None = None
    """The ids packed as UTF-8, where the checks made them so (a FAISS store keeps them
    so)."""

    def __len__(self) -> int:
        return len(self.ids)


def join_batches(parts: Sequence[CheckedBatch], dim: int, unit: bool) -> CheckedBatch:
    """One batch of the records of `parts` (checked apart, none of them sharing an id)."""
    ids = [i for part in parts for i in part.ids]
    metadata = checked_metadata(ids, [m for part in parts for m in part.metadata])
    rows = [part.vectors for part in parts]
    vectors = np.concatenate(rows) if rows else np.empty((0, dim), dtype=np.float32)
    return CheckedBatch(ids, IdKeys.of(ids), vectors, metadata, dim, unit)


def count_error(metadata: MetadataInput, n: int) -> MetadataError | None:
    """The error for metadata of another count of records than n ids, None if it has n."""
    if isinstance(metadata, Mapping):
        for name, values in metadata.items():
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(
                values, (Sequence, np.ndarray)
            ):
                kind = type(values).__name__
                return MetadataError(f"field {name!a}: a column is a list of values, not {kind}")
            if len(values) != n:
                return MetadataError(f"field {name!a} has {len(values)} values for {n} ids")
    elif metadata is not None and len(metadata) != n:
        return MetadataError(f"{len(metadata)} metadata entries for {n} ids")
    return None


def checked_metadata(ids: Sequence[str], metadata: MetadataInput) -> CheckedMetadata:
    """The metadata of the records `ids` (None: none; rows or columns of as many records)
    as stores keep it, or the `MetadataError` naming the first bad record, field and
    reason."""
    if metadata is None or (isinstance(metadata, Mapping) and not metadata):  # no fields
        return CheckedMetadata({}, len(ids))
    plain = plain_columns(metadata)
    if plain is not None:
        return plain
    rows = metadata_rows(metadata) or ()
    converted = plain_columns([check_metadata(i, m) for i, m in zip(ids, rows, strict=True)])
    assert converted is not None, "what passes check_metadata passes plain_columns"
    return converted


def _check_value(where: str, value: Any) -> MetadataValue:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        raise MetadataError(f"{where}: null values are not allowed; leave the key out")
    if isinstance(value, str):
        if not encodable(value):
            raise MetadataError(f"{where}: {value!a} is not valid Unicode text (a lone surrogate)")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise MetadataError(
                f"{where}: {value} is outside +-2**53, the integers every store keeps exactly"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MetadataError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, Mapping):
        raise MetadataError(f"{where}: nested objects are not allowed")
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        bad = next((v for v in items if not isinstance(v, str)), None)
        if bad is not None or any(v is None for v in items):
            raise MetadataError(
                f"{where}: lists may hold only strings, found {type(bad).__name__} "
                f"{reprlib.repr(bad)}"
            )
        for item in items:
            if not encodable(item):
                raise MetadataError(f"{where}: {item!a} is not valid Unicode text")
        return items
    raise MetadataError(
        f"{where}: {type(value).__name__} is not allowed (str, int, float, bool or list of str)"
    )


def check_metadata(record_id: str, metadata: Mapping[str, Any] | None) -> dict[str, MetadataValue]:
    """Validate one record's metadata and convert numpy scalars to Python values.

    Allowed: str, int (within +-2**53), float (finite), bool, list of str, all of it text
    that UTF-8 can write. These are Pinecone's limits, applied everywhere so that every
    store holds the same data and can save what it took.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            f"record {record_id!r}: metadata must be a dict, got {type(metadata).__name__}"
        )
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        where = f"record {record_id!r}, key {key!a}"
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise MetadataError(f"{where}: keys are non-empty strings not starting with '$'")
        if not encodable(key):
            raise MetadataError(f"{where}: the key is not valid Unicode text (a lone surrogate)")
        out[key] = _check_value(where, value)
    return out


def plain_ids(ids: Any) -> tuple[list[str], Utf8] | None:
    """`ids` as a list, and packed, when every one is a non-empty str, all of them text that
    UTF-8 can write; None otherwise (also for an empty batch). One join and one encode check
    and pack them (`utf8_packed`). Ids twice: `IdKeys.repeats`."""
    if not isinstance(ids, (list, tuple)) or not ids:
        return None
    packed = utf8_packed(ids)
    if packed is None or not (packed[1][1:] > packed[1][:-1]).all():  # none empty
        return None
    return list(ids), packed


def checked_ids(ids: Sequence[str | int]) -> tuple[list[str], IdKeys, Utf8 | None]:
    """The batch's ids as stores take them, with their keys and, where the batch's ids were
    plain, packed; or the `IdError` naming the first bad or repeated id."""
    plain = plain_ids(ids)
    if plain is not None:
        sids, packed = plain
        keys = IdKeys.of(sids)
        if not keys.repeats(sids):
            return sids, keys, packed
    sids = normalize_ids(ids)  # converts ints, or names the bad or repeated id
    return sids, IdKeys.of(sids), None


KEY_BITS = np.int64(-(2**32))
"""The bits of an id's hash that make its key: the top 32 (the low 32 hold the id's position
while the keys sort)."""


@dataclass(frozen=True, slots=True, eq=False)
class IdKeys:
    """A batch's ids as sorted keys: the top 32 bits of each one's hash (Python's own, for
    this process only), and where each key's id is in the batch. Sorted, equal ids sit side
    by side, which is how a batch is checked for an id twice; a FAISS store's id map
    (`IdIndex`) keeps them as they are. Different ids may share a key (about 100 pairs in a
    million ids): whoever finds ids by key confirms each candidate against the id."""

    hashes: np.ndarray
    """The keys, sorted."""
    order: np.ndarray
    """The position in the batch of the id of each of `hashes`."""

    @classmethod
    def of(cls, ids: Sequence[str]) -> IdKeys:
        """One sort of keys and positions packed together (a plain sort of int64 costs
        about two thirds of an argsort; batches hold fewer than 2**32 ids)."""
        return cls.of_hashes(np.fromiter(map(hash, ids), np.int64, len(ids)))

    @classmethod
    def of_hashes(cls, hashes: np.ndarray) -> IdKeys:
        """From the ids' hashes (`hash(id)` each, in the batch's order)."""
        packed = np.sort((hashes & KEY_BITS) | np.arange(len(hashes), dtype=np.int64))
        return cls(packed & KEY_BITS, packed & ~KEY_BITS)

    def repeats(self, ids: Sequence[str]) -> bool:
        """Whether an id appears twice (equal hashes side by side, confirmed by the ids)."""
        keys = self.hashes
        same = keys[1:] == keys[:-1]
        if not same.any():
            return False
        shared = np.zeros(len(keys), dtype=bool)  # a hash another id has too
        shared[1:] |= same
        shared[:-1] |= same
        held = [ids[n] for n in self.order[shared].tolist()]
        return len(set(held)) < len(held)  # equal ids have equal hashes: one of them is here
