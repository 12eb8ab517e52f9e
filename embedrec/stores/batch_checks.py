"""The checks of `VectorStore.upsert`: per record (`normalize_ids`, `check_metadata`, which
name the record, field and reason), and for a whole batch at once in passes that run in C
(`plain_ids`, `plain_metadata`): the common batch (str ids; dicts of str, int, float, bool
and list-of-str values) passes at a small share of the per-record checks' cost (a Python
call per value). Anything else, and anything wrong, gets None from the batch checks, and the
per-record checks then convert it or name the record, field and reason.

A `CheckedBatch` is a batch that passed them (`VectorStore.check_batch`), which
`VectorStore.upsert_checked` writes without checking it again."""

from __future__ import annotations

import itertools
import math
import operator
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from embedrec.stores.errors import IdError, MetadataError, StoreError, VectorError
from embedrec.stores.results import MetadataValue
from embedrec.stores.text import encodable

MAX_INT = 2**53
"""Metadata integers lie within +-2**53: every store must keep them exact, and Pinecone holds
numbers as float64, in which 2**53 + 1 reads back as 2**53."""
PLAIN_VALUES = frozenset({str, int, float, bool, list})
NO_METADATA = frozenset({dict, type(None)})
REFUSALS = (IdError, MetadataError, VectorError)
"""What the checks raise for one record a store will not hold (the others are the batch's)."""

Refusal = tuple[int, StoreError]
"""A record of a batch that fails the checks: its position and the error naming it."""


@dataclass(frozen=True, slots=True, eq=False)
class CheckedBatch:
    """Records that passed every check of `VectorStore.upsert`, made by
    `VectorStore.check_batch` (or `check_records`) of a store with this `dim`: ids unique
    non-empty str, finite float32 vectors (unit rows when `unit`), metadata as stores keep
    it. `VectorStore.upsert_checked` writes it without checking any record again."""

    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, MetadataValue]]
    dim: int
    unit: bool
    """The rows were scaled to unit length (for a cosine store)."""

    def __len__(self) -> int:
        return len(self.ids)


def join_batches(parts: Sequence[CheckedBatch], dim: int, unit: bool) -> CheckedBatch:
    """One batch of the records of `parts` (checked apart, none of them sharing an id)."""
    ids = [i for part in parts for i in part.ids]
    metadata = [m for part in parts for m in part.metadata]
    rows = [part.vectors for part in parts]
    vectors = np.concatenate(rows) if rows else np.empty((0, dim), dtype=np.float32)
    return CheckedBatch(ids, vectors, metadata, dim, unit)


def normalize_ids(ids: Iterable[str | int]) -> list[str]:
    """Stringify ids (ints are accepted) and reject empty ones, other types and duplicates."""
    given = list(ids)
    if set(map(type, given)) <= {str}:  # the common case, checked in bulk (0.2x the time)
        unique = set(given)
        if len(unique) == len(given) and "" not in unique and "".join(given).isascii():
            return given
    out: list[str] = []
    seen: set[str] = set()
    for pos, raw in enumerate(given):
        if isinstance(raw, bool) or not isinstance(raw, (str, int, np.integer)):
            raise IdError(
                f"id at position {pos} is {type(raw).__name__} {raw!r}: ids are str or int"
            )
        sid = str(int(raw)) if not isinstance(raw, str) else raw
        if not sid:
            raise IdError(f"id at position {pos} is empty")
        if not encodable(sid):
            raise IdError(
                f"id {sid!a} at position {pos} is not valid Unicode text (a lone surrogate): "
                "no store can write it"
            )
        if sid in seen:
            raise IdError(f"id {sid!r} appears twice in one batch (again at position {pos})")
        seen.add(sid)
        out.append(sid)
    return out


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


def plain_ids(ids: Any) -> list[str] | None:
    """`ids` as a list when every one is a non-empty str, none twice and all of them text
    that UTF-8 can write; None otherwise (also for an empty batch)."""
    if not isinstance(ids, (list, tuple)) or set(map(type, ids)) != {str}:
        return None
    unique = set(ids)
    if len(unique) != len(ids) or "" in unique or not encodable("".join(ids)):
        return None
    return list(ids)


def plain_metadata(
    metadata: Sequence[Any],
) -> list[dict[str, MetadataValue]] | None:
    """The batch's metadata (None as {}) when every entry is a dict or None whose keys are
    plain non-empty strings not starting with '$' and whose values are str (writable as
    UTF-8), int within +-2**53, finite float, bool or a list of such str; None otherwise.
    The dicts are the caller's own (stores copy what they keep); their lists are copies."""
    if not set(map(type, metadata)) <= NO_METADATA:
        return None
    dicts = [m for m in metadata if m]
    keys = set(itertools.chain.from_iterable(dicts))
    if set(map(type, keys)) - {str} or not encodable("".join(keys)):
        return None
    if any(not k or k[0] == "$" for k in keys):
        return None
    values = list(itertools.chain.from_iterable(map(dict.values, dicts)))
    kinds = set(map(type, values))
    if kinds - PLAIN_VALUES:
        return None
    if list in kinds:  # the lists' items join the strings, which they must all be
        items = list(itertools.chain.from_iterable(_of_type(values, list)))
        if set(map(type, items)) - {str}:
            return None
        values += items
        kinds.add(str)
    if str in kinds and not encodable("".join(_of_type(values, str))):
        return None
    if int in kinds:
        ints = _of_type(values, int)
        if min(ints) < -MAX_INT or max(ints) > MAX_INT:
            return None
    if float in kinds and not math.isfinite(sum(_of_type(values, float))):
        return None  # NaN or inf, or finite values whose sum overflows: checked one by one
    out = [m if m is not None else {} for m in metadata]
    return [_own_lists(m) for m in out] if list in kinds else out


def _own_lists(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with copies of its lists, which a store must not share with the caller."""
    return {k: v.copy() if type(v) is list else v for k, v in metadata.items()}


def _of_type(values: list[Any], kind: type) -> list[Any]:
    """The values of exactly `kind`, picked out without a Python call per value."""
    return list(itertools.compress(values, map(operator.is_, map(type, values), repeat(kind))))
