"""The catalogue events of an alias's live generation, carried into the generation a
rebuild builds from the catalogue file, before it is validated.

The events (`LiveEdits`, recorded per physical store: the live generation's URI, or the
alias's own for a store written before it was adopted as `g0000`) stand by the pipeline's
rule (`manifest.unchanged`): an edit stands while the catalogue's row is as the live
generation's manifest has it, or has none. A standing addition or change is copied from the
live generation (its stored vector and metadata: nothing is embedded again), a standing
removal is deleted from the new generation, and the edits are recorded for the new
generation, so that they follow the alias across the swap. An addition or change cannot be
copied into a generation built with another embedder (its vectors are another model's): it
is said, and the catalogue's row, if any, stays.

Only what differs is written: a record the new generation already holds as the live one does
is left alone. So the rebuild replays once before validating, and once more right after its
swap (`late=True`), which carries the events the consumer applied to the old generation
meanwhile; a consumer that records an edit after that second read finds the alias moved and
writes the new generation itself (retrieval/live/catalogue.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing

import numpy as np

from embedrec.embedders import Embedder
from embedrec.ingestion.manifest import (
    SQL_BATCH,
    IngestManifest,
    LiveEdits,
    content_hash,
    manifest_path,
    unchanged,
)
from embedrec.ingestion.sources import Source
from embedrec.ingestion.store_info import store_info
from embedrec.ingestion.validation import catalog_rows
from embedrec.stores import Record, VectorStore, open_existing
from embedrec.stores.lifecycle.aliases import Generation
from embedrec.stores.lifecycle.generations import ADOPTED

Say = Callable[[str], None]


def standing_edits(alias: str, live: Generation, source: Source) -> tuple[dict[str, str], str]:
    """The live generation's catalogue edits that still stand (id -> op), and the embedder
    name its manifest was written with ("" without a manifest)."""
    uris = [alias, live.uri] if live.name == ADOPTED else [live.uri]  # the last one wins
    edits: dict[str, str] = {}
    for uri in uris:
        with closing(LiveEdits.of(uri)) as book:
            edits |= book.all()
    known: dict[str, str] = {}
    built_with = ""
    if not edits:  # the usual case: the catalogue is not read again
        return edits, built_with
    for uri in uris:
        path = manifest_path(source.path, uri)
        if path.exists():
            with closing(IngestManifest(path)) as manifest:
                known |= manifest.hashes(list(edits))
                built_with = manifest.info().get("embedder_name", built_with)
    rows = catalog_rows(source, set(edits))
    return {
        rid: op
        for rid, op in edits.items()
        if rid not in rows or unchanged(known.get(rid), content_hash(built_with, rows[rid]), op)
    }, built_with


def replay(
    alias: str,
    live: Generation | None,
    generation: Generation,
    source: Source,
    embedder: Embedder,
    say: Say,
    *,
    late: bool = False,
) -> dict[str, str]:
    """Carry the live generation's standing edits into `generation` (see the module doc);
    returns those carried (id -> op); `late`: the replay after the swap, which says only
    what it wrote."""
    if live is None:
        return {}
    edits, built_with = standing_edits(alias, live, source)
    if not edits:
        return {}
    with open_existing(live.uri) as old, open_existing(generation.uri) as new:
        info = store_info(old)
        same_model = (info.embedder_name if info else built_with) == embedder.name
        ids = [i for i, op in edits.items() if op != "removed"]
        copied, written = _copy(old, new, ids, same_model)
        if not same_model and ids and not late:
            say(f"{live.name}'s items added or changed by catalogue events are not carried "
                f"into {generation.name}: they were embedded by another model")  # fmt: skip
        removed = [i for i, op in edits.items() if op == "removed"]
        for start in range(0, len(removed), SQL_BATCH):
            written += new.delete(removed[start : start + SQL_BATCH])
        new.flush()
    carried = {rid: op for rid, op in edits.items() if op == "removed" or rid in copied}
    with closing(LiveEdits.of(generation.uri)) as book:
        book.record(carried.items())
    if not late:
        say(f"carried {len(carried)} catalogue event edit(s) from {live.name} into "
            f"{generation.name}")  # fmt: skip
    elif written:
        say(f"carried {written} catalogue event edit(s) applied to {live.name} during the "
            f"rebuild into {generation.name}")  # fmt: skip
    return carried


def _copy(
    old: VectorStore, new: VectorStore, ids: list[str], same_model: bool
) -> tuple[set[str], int]:
    """Copy the records of `ids` from `old` to `new` (none across models), leaving alone
    those `new` already holds alike: (the ids carried, how many were written)."""
    copied: set[str] = set()
    written = 0
    if not same_model:
        return copied, written
    for start in range(0, len(ids), SQL_BATCH):
        records = old.fetch(ids[start : start + SQL_BATCH])
        held = {r.id: r for r in new.fetch([r.id for r in records])}
        changed = [r for r in records if not _alike(r, held.get(r.id))]
        if changed:
            vectors = np.stack([r.vector for r in changed])
            new.upsert([r.id for r in changed], vectors, [r.metadata for r in changed])
        copied.update(r.id for r in records)
        written += len(changed)
    return copied, written


def _alike(record: Record, other: Record | None) -> bool:
    return (
        other is not None
        and record.metadata == other.metadata
        and np.array_equal(record.vector, other.vector)
    )
