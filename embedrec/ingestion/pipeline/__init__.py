"""Catalog -> store: validate, embed (through the cache), upsert in batches, checkpoint.

Each embedder prepares its own input from a catalog row (`Embedder.prepare`), so this module
knows nothing of text, images or learned item features. Every per-row problem (a bad value,
an input the embedder refuses, a record the store refuses) goes to the rejects file with its
row, field and reason, and the other rows land.

Checkpoints (every `checkpoint_seconds`, spaced further when a flush is slow) make a run
resumable after a kill: an id enters the manifest (manifest.py) only after `store.flush()`
has made it durable, so a killed run leaves rows that are in the store but not the manifest
(upserted again next time: an overwrite, never a duplicate) and never the reverse. When the
store holds fewer records than the manifest lists (it was deleted, or it lives in memory),
the manifest is reconciled with the store before anything is skipped.

The package: `run.py` holds one ingest's state and steps (`_Run`), `writes.py` the upsert of
a batch, and this module `ingest`, which sets a run up and tears it down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from embedrec.common.collector import collecting_less
from embedrec.embedders import Embedder, EmbeddingCache, get_embedder
from embedrec.embedders.cache import given_or_default
from embedrec.ingestion.manifest import IngestManifest, LiveEdits, manifest_path
from embedrec.ingestion.pipeline.run import EmbedStage, Pending, Upserted, _Run, read_size
from embedrec.ingestion.pipeline.writes import metadata_of, upsert_records
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary, RejectLimit, RejectsFile

GC_YOUNG = 100_000
"""While an ingest runs, the garbage collector looks at new objects once this many more
are alive (Python's default: 700). Each row makes a few (its Row, metadata dict, list
cells), and at the default the collections cost about 3 µs a row, mostly in the full ones
that walk every object the process held before (see `_collecting_less`); at this, with
those frozen, about 0.2 µs. Cyclic garbage waits longer: at most this many objects."""

__all__ = [
    "EmbedStage",
    "Pending",
    "Upserted",
    "ingest",
    "metadata_of",
    "read_size",
    "upsert_records",
]


def _check_modality(embedder: Embedder, source: Source) -> None:
    """An item embedder reads any catalog's metadata; the others need their own input kind."""
    modality = source.columns.modality
    if embedder.modality not in (modality, "item"):
        flag = "--text" if embedder.modality == "text" else "--image-col"
        raise ValueError(
            f"embedder {embedder.name!r} takes {embedder.modality} input, but the catalog "
            f"mapping gives {modality} (use {flag})"
        )


def ingest(
    source: Source,
    store_uri: str,
    embedder_spec: str = "text",
    options: IngestOptions | None = None,
    *,
    embedder: Embedder | None = None,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int], None] | None = None,
    manifest: Path | str | None = None,
    stage: EmbedStage | None = None,
) -> IngestSummary:
    """Load `source` into the store at `store_uri`; returns what happened.

    `embedder` (default: `get_embedder(embedder_spec)`, its model loaded only when a row
    needs embedding) and `cache` (default: the embedding cache under `$EMBEDREC_CACHE`) may
    be passed in. Raises `TooManyRejects` past `options.max_rejects` (N rows: at once; P% of
    the rows read: at the end, before --sync deletes anything), after checkpointing.
    An item embedder (modality "item", e.g. `two-tower:MODEL`) prepares its input from each
    record's id and metadata, so the metadata columns must carry the model's item features.
    `stage` embeds elsewhere (see `EmbedStage`); reading, the manifest, the cache, rejects,
    writes and checkpoints stay here.
    """
    options = options or IngestOptions()
    if options.batch_size < 1:
        raise ValueError(f"batch size must be positive, got {options.batch_size}")
    RejectLimit.parse(options.max_rejects)  # a bad limit fails before any work
    started = time.perf_counter()
    embedder = embedder if embedder is not None else get_embedder(embedder_spec)
    _check_modality(embedder, source)
    manifest_file = Path(manifest) if manifest else manifest_path(source.path, store_uri)
    rejects_path = options.rejects or manifest_file.with_suffix(".rejects.jsonl")
    summary = IngestSummary(rejects_path=rejects_path, manifest=manifest_file)
    with (
        collecting_less(GC_YOUNG),
        closing(IngestManifest(manifest_file)) as book,
        closing(LiveEdits.of(store_uri)) as edits,
        given_or_default(cache) as run_cache,
    ):
        run = _Run(
            source=source, store_uri=store_uri, spec=embedder_spec, embedder=embedder,
            cache=run_cache, options=options, manifest=book, edits=edits,
            rejects=RejectsFile(rejects_path), progress=progress, summary=summary, stage=stage,
        )  # fmt: skip
        try:
            run.open_existing()
            run.run()
        finally:
            run.writer.shutdown(wait=True)
            run.cacher.shutdown(wait=True)
            run.rejects.close()
            if run.store is not None:
                run.store.close()
            summary.seconds = time.perf_counter() - started
    return summary
