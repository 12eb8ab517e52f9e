"""Writing a batch of rows to a store: the records its checks pass land, and each other
record is refused by its index, with the metadata field to blame where there is one."""

from __future__ import annotations

from itertools import chain, groupby
from operator import attrgetter

import numpy as np

from embedrec.ingestion.rows import ChunkMetadata, Row
from embedrec.stores import IdError, MetadataError, VectorError, VectorStore
from embedrec.stores.base import MetadataInput, check_metadata

REFUSED = (IdError, MetadataError, VectorError)
"""What a store raises for a record it will not hold. Its checks name each such record
(`check_records`); a backend that refuses a checked batch (its own limits) gets it again
record by record, to reject only those it refuses."""

_METADATA = attrgetter("metadata")
_META = attrgetter("meta")
_AT = attrgetter("at")


def metadata_of(rows: list[Row]) -> MetadataInput:
    """The rows' metadata as a store takes it: as columns where every row's is in a chunk
    `build_many` built with the same fields (no dict made per record), else a dict each."""
    if set(map(type, map(_META, rows))) != {ChunkMetadata}:
        return list(map(_METADATA, rows))
    parts = [
        chunk.columns(list(map(_AT, group)))
        for chunk, group in groupby(rows, key=_META)  # type: ignore[arg-type]
    ]
    if len(parts) == 1:
        return parts[0]
    if len({tuple(part) for part in parts}) > 1:
        return list(map(_METADATA, rows))
    return {name: list(chain.from_iterable(part[name] for part in parts)) for name in parts[0]}


def upsert_records(
    store: VectorStore, ids: list[str], vectors: np.ndarray, metadata: MetadataInput
) -> dict[int, str]:
    """Write the records the store's checks pass (checked once, here) and return why each
    other record was refused, by its index; when the backend refuses the checked batch (its
    own limits), retry it record by record to refuse only those it refuses."""
    checked, refusals = store.check_records(ids, vectors, metadata)
    refused = {pos: str(exc) for pos, exc in refusals}
    try:
        store.upsert_checked(checked)
        return refused
    except REFUSED:
        pass
    kept = [i for i in range(len(ids)) if i not in refused]
    for j, i in enumerate(kept):
        try:
            store.upsert([ids[i]], checked.vectors[j : j + 1], [checked.metadata[j]])
        except REFUSED as exc:
            refused[i] = str(exc)
    return refused


def refused_field(row: Row) -> str | None:
    """The metadata field of `row` that stores refuse, or None (then its id or vector)."""
    for name, value in row.metadata.items():
        try:
            check_metadata(row.id, {name: value})
        except MetadataError:
            return name
    return None
