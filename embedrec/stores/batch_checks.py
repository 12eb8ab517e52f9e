"""The checks of `VectorStore.upsert`: per record (`normalize_ids`, `check_metadata`, which
name the record, field and reason), and for a whole batch at once in passes that run in C
(`plain_ids`, and `batch_columns.plain_columns` for metadata, a column at a time): the
common batch (str ids; dicts of str, int, float, bool and list-of-str values) passes at a
small share of the per-record checks' cost (a Python call per value). Anything else, and
anything wrong, gets None from the batch checks, and the per-record checks then convert it
or name the record, field and reason.

A `CheckedBatch` is a batch that passed them (`VectorStore.check_batch`), which
`VectorStore.upsert_checked` writes without checking it again."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrec.stores.batch_columns import (
    MAX_INT,
    CheckedMetadata,
    MetadataInput,
    metadata_rows,
    plain_columns,
)
from embedrec.stores.errors import IdError, MetadataError, StoreError, VectorError
from embedrec.stores.results import MetadataValue
from embedrec.stores.text import encodable

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
            if len(values) != n:
                return MetadataError(f"field {name!a} has {len(values)} values for {n} ids")
    elif metadata is not None and len(metadata) != n:
        return MetadataError(f"{len(metadata)} metadata entries for {n} ids")
    return None


def checked_metadata(ids: Sequence[str], metadata: MetadataInput) -> CheckedMetadata:
    """The metadata of the records `ids` (None: none; rows or columns of as many records)
    as stores keep it, or the `MetadataError` naming the first bad record, field and
    reason."""
    if metadata is None:
        return CheckedMetadata({}, len(ids))
    plain = plain_columns(metadata)
    if plain is not None:
        return plain
    rows = metadata_rows(metadata) or ()
    converted = plain_columns([check_metadata(i, m) for i, m in zip(ids, rows, strict=True)])
    assert converted is not None, "what passes check_metadata passes plain_columns"
    return converted


def normalize_ids(ids: Iterable[str | int]) -> list[str]:
    """Stringify ids (ints are accepted) and reject empty ones, other types and duplicates."""
    out: list[str] = []
    seen: set[str] = set()
    for pos, raw in enumerate(ids):
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
    """`ids` as a list when every one is a non-empty str, all of them text that UTF-8 can
    write; None otherwise (also for an empty batch). Ids twice: `IdKeys.repeats`."""
    if not isinstance(ids, (list, tuple)) or set(map(type, ids)) != {str}:
        return None
    if not all(ids) or not encodable("".join(ids)):
        return None
    return list(ids)


def checked_ids(ids: Sequence[str | int]) -> tuple[list[str], IdKeys]:
    """The batch's ids as stores take them, with their keys; or the `IdError` naming the
    first bad or repeated id."""
    sids = plain_ids(ids)
    keys = None if sids is None else IdKeys.of(sids)
    if sids is None or keys is None or keys.repeats(sids):
        sids = normalize_ids(ids)  # converts ints, or names the bad or repeated id
        keys = IdKeys.of(sids)
    return sids, keys


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
        hashes = np.fromiter(map(hash, ids), np.int64, len(ids))
        packed = np.sort((hashes & KEY_BITS) | np.arange(len(ids), dtype=np.int64))
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
