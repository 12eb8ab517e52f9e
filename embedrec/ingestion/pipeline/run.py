"""One ingest's state and steps (`_Run`): rows are read, built, hashed and compared with
the manifest a few thousand at a time, embedded a batch at a time on the calling thread (or
an `EmbedStage`), and upserted and checkpointed on a writer thread, one hand-off behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Protocol

import numpy as np

from embedrec.embedders import Embedder, EmbeddingCache, InputError, embed_cached
from embedrec.embedders.keyed import VectorBuffer  # fmt: skip
from embedrec.ingestion.manifest import (
    SQL_BATCH,
    IngestManifest,
    LiveEdits,
    content_hashes,
    unchanged,
)
from embedrec.ingestion.pipeline.writes import metadata_of, refused_field, upsert_records
from embedrec.ingestion.rows import Reject, Row
from embedrec.ingestion.sources import Source
from embedrec.ingestion.store_info import describe, store_info
from embedrec.ingestion.summary import (
    IngestOptions,
    IngestSummary,
    RejectLimit,
    RejectsFile,
    TooManyRejects,
)
from embedrec.stores import (
    StoreInfo,
    StoreNotFound,
    VectorStore,
    open_store,
)

READ_ROWS = 4096
"""Records are read, built, hashed and looked up in the manifest about this many at a time
(a whole number of batches), which pays each step's fixed costs once per few thousand rows;
rejects, embedding and progress still go a batch at a time, in catalog order."""
HAND_OFF_ROWS = 4096
"""Embedded rows go to the writer thread this many at a time (or sooner when a checkpoint
is due): each hand-off costs the reading thread a wait and a wake-up, and each upsert its
checks' fixed costs."""
CHECKPOINT_SHARE = 20
"""Checkpoints are spaced at least this many times their own cost apart (a store that
rewrites its files on flush grows slower to flush), keeping them to ~5% of a run."""
CACHE_BULK = 16384
"""New vectors are written to the embedding cache this many at a time (a transaction per
batch of 256 costs about twice as much per row, one per 4,096 a sixth more), on a thread of
their own, so that neither the upserts nor the reader behind them wait for a bulk write."""
_ID = attrgetter("id")
_ROW = itemgetter(0)
_DIGEST = itemgetter(1)

Pending = list[tuple[Row, str]]
"""Changed rows waiting to be embedded, each with its content hash."""
Upserted = Callable[[], Iterable[tuple[Pending, list[Reject]]]]
"""A batch written elsewhere: per part, the rows the store wrote and the rejects."""


class EmbedStage(Protocol):
    """Where changed rows are embedded when not on the calling thread (`ingest(stage=...)`,
    e.g. ingestion/distributed on a Ray cluster). It takes each batch of changed rows in
    catalog order and gives them back, embedded and in the same order, through
    `_Run.hand_off`; `finish` hands back what it still holds before the last checkpoint."""

    def submit(self, run: _Run, batch: Pending) -> None: ...

    def finish(self, run: _Run) -> None: ...


@dataclass
class _Run:
    """The state of one ingest: rows are read, prepared and embedded on the calling thread,
    upserted and checkpointed on `writer`."""

    source: Source
    store_uri: str
    spec: str
    embedder: Embedder
    cache: EmbeddingCache
    options: IngestOptions
    manifest: IngestManifest
    edits: LiveEdits
    """Catalogue events applied to the store since the last ingest (see `LiveEdits`)."""
    rejects: RejectsFile
    progress: Callable[[int], None] | None
    summary: IngestSummary
    stage: EmbedStage | None = None
    """None: embedded here, by `process`."""
    store: VectorStore | None = None
    described: bool = False
    """The store has been told the metadata schema and described (its embedder), this run."""
    known: StoreInfo | None = None
    """What the existing store said about itself when opened (None for a new store)."""
    held: bool = True
    """The manifest held ids when the run began; when it did not, no row read is in it (ids
    are unique in a catalog, and only a checkpoint adds to it), so none is looked up."""
    seen: set[str] = field(default_factory=set)
    """The ids read (with --sync alone: nothing else asks)."""
    unread_ids: int = 0
    """Rejected rows whose id could not be read: --sync cannot tell whether they left."""
    uncommitted: list[tuple[str, str]] = field(default_factory=list)
    last_checkpoint: float = field(default_factory=time.monotonic)
    checkpoint_cost: float = 0.0
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    """Upserts and checkpoints run here, one hand-off behind the embedding of the next."""
    writing: Future[list[Reject]] | None = None
    gathered: list[tuple[Pending, np.ndarray]] = field(default_factory=list)
    """Embedded batches not yet handed to `writer` (see `hand_off`)."""
    gathered_rows: int = 0
    """The rows in `gathered`."""
    cacher: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    """New vectors are put in the embedding cache here, CACHE_BULK at a time."""
    cache_writing: Future[None] | None = None
    unwritten: VectorBuffer = field(default_factory=VectorBuffer)
    """New vectors not yet handed to `cacher`."""
    caching: VectorBuffer = field(default_factory=VectorBuffer)
    """New vectors `cacher` is putting in the cache (looked up here until it has)."""

    def reject(self, reject: Reject) -> None:
        self.summary.rejected += 1
        self.rejects.write(reject)
        self.check_rejects(done=False)

    def check_rejects(self, *, done: bool) -> None:
        """Raise `TooManyRejects`, after a checkpoint, once the rejects pass the limit."""
        limit = RejectLimit.parse(self.options.max_rejects)
        s = self.summary
        if limit is not None and limit.passed_by(s.rejected, s.rows_read, done=done):
            s.aborted = f"more than {limit} rejected"
            if self.stage is not None:  # what it holds lands, as it would have here
                self.stage.finish(self)
            self.checkpoint()
            raise TooManyRejects(s, limit)

    def _reject_row(self, row: Row, reason: str, field: str | None) -> None:
        self.reject(Reject(str(self.source.path), row.row, row.id, field, reason))

    # -- the store ----------------------------------------------------------------------------

    def open_existing(self) -> None:
        try:
            self.store = open_store(self.store_uri, metric=self.metric)
        except StoreNotFound:
            self.store = None
        if self.store is None:
            self.manifest.clear()
            self.held = False
            return
        self.known = store_info(self.store)
        if self.known is not None:  # refused before any row is embedded
            self.known.check_embedder(self.spec, self.embedder.name, self.store_uri)
        if self.store.count() < self.manifest.count():
            self._reconcile()
        self.held = self.manifest.count() > 0

    def _reconcile(self) -> None:
        """Forget manifest ids the store lacks (it was rebuilt or lost writes), except those a
        catalogue event removed: their row is skipped while it stays as it was."""
        assert self.store is not None
        removed = self.edits.removed()
        ids = [i for i in self.manifest.ids() if i not in removed]
        missing: list[str] = []
        for start in range(0, len(ids), SQL_BATCH):
            part = ids[start : start + SQL_BATCH]
            present = {r.id for r in self.store.fetch(part)}
            missing.extend(i for i in part if i not in present)
        self.manifest.remove(missing)

    @property
    def metric(self) -> str | None:
        """The metric the embedder's vectors need (a two-tower model's popularity coordinate:
        dot), else None: a new store's is the URI's or cosine, an existing one's its own."""
        return getattr(self.embedder, "metric", None)

    def writable_store(self) -> VectorStore:
        """The store, created if need be, told the declared metadata kinds before its first
        upsert (so that Qdrant builds its payload indexes before its graph)."""
        if self.store is None:
            self.store = open_store(self.store_uri, dim=self.embedder.dim, metric=self.metric)
        if not self.described:
            kinds = self.source.columns.declared_kinds()
            if kinds:
                self.store.declare_fields(kinds)
            describe(self.store, self.spec, self.embedder, self.known)
            self.described = True
        return self.store

    # -- reading, embedding, writing ----------------------------------------------------------

    def run(self) -> None:
        size = self.options.batch_size
        process = self.process if self.stage is None else partial(self.stage.submit, self)
        pending: Pending = []
        for chunk in self.source.chunks(read_size(size)):
            digests = self._digests(chunk)
            for start in range(0, len(chunk), size):
                part = chunk[start : start + size]
                self._read(part)
                pending += self._changed(part, digests[start : start + size])
                self.summary.rows_read += len(part)
                while len(pending) >= size:
                    process(pending[:size])
                    pending = pending[size:]
                if self.progress is not None:
                    self.progress(len(part))
        if pending:
            process(pending)
        if self.stage is not None:
            self.stage.finish(self)
        self.checkpoint()
        self.check_rejects(done=True)  # a share of the rows read: judged now
        if self.options.sync:
            self.sync()

    def _read(self, part: Sequence[Row | Reject]) -> None:
        """Send the part's rejects to the rejects file; with --sync, remember every id."""
        sync = self.options.sync
        if Reject not in set(map(type, part)):  # the usual part: rows alone
            if sync:
                self.seen.update(map(_ID, part))
            return
        for item in part:
            if item.id is None:
                self.unread_ids += 1
            elif sync:
                self.seen.add(item.id)
            if isinstance(item, Reject):
                self.reject(item)

    def _changed(self, part: Sequence[Row | Reject], digests: list[str | None]) -> Pending:
        """The part's changed rows with their content hashes (`_digests`); the others are
        counted unchanged, or are rejects."""
        if None not in digests:  # the usual part on a first run: every row new
            return list(zip(part, digests, strict=True))
        out: Pending = []
        for item, digest in zip(part, digests, strict=True):
            if digest is not None:
                out.append((item, digest))  # type: ignore[arg-type]
            elif type(item) is Row:
                self.summary.unchanged += 1
        return out

    def _digests(self, chunk: list[Row | Reject]) -> list[str | None]:
        """Per record of `chunk`, the content hash of a row that differs from the manifest's,
        else None (a reject, an unchanged row). A catalogue event's edit stands while the
        row is as the manifest has it; a row changed since overrides it."""
        plain = Reject not in set(map(type, chunk))
        rows = chunk if plain else [item for item in chunk if type(item) is Row]
        ids = list(map(_ID, rows))
        known = self.manifest.hashes(ids) if self.held else {}
        edits = self.edits.ops(ids)
        hashes = content_hashes(self.embedder.name, rows)
        digests: list[str | None] = list(hashes)
        if known or edits:
            ops = map(edits.get, ids)
            for i, (rid, digest, op) in enumerate(zip(ids, hashes, ops, strict=True)):
                if unchanged(known.get(rid), digest, op):
                    digests[i] = None
            if edits:
                self.edits.drop(
                    rid for rid, d in zip(ids, digests, strict=True) if d and rid in edits
                )
        if plain:
            return digests
        found = iter(digests)
        return [next(found) if type(item) is Row else None for item in chunk]

    def process(self, batch: Pending) -> None:
        """Prepare, embed, then hand one batch of changed rows to the writer."""
        batch, inputs = self._prepare(batch)
        while batch:
            try:
                computed = (self.unwritten, self.caching)
                vectors, hits = embed_cached(self.embedder, inputs, self.cache, unwritten=computed)
                break
            except InputError as exc:  # chunks embedded before it are cached: cheap to retry
                row, _ = batch.pop(exc.index)
                inputs.pop(exc.index)
                self._reject_row(row, exc.reason, self.source.columns.input_field)
        if batch:
            self.hand_off(batch, vectors, hits)

    def hand_off(
        self, batch: Pending, vectors: np.ndarray, hits: int, upserted: Upserted | None = None
    ) -> None:
        """Give embedded rows (`hits` of them from the cache) to the writer: gathered until
        HAND_OFF_ROWS are, or a checkpoint is due. `upserted`: the batch was written
        elsewhere (by an `EmbedStage`'s writers); the writer waits for it there instead of
        upserting."""
        self.summary.embedded += len(batch) - hits
        self.summary.cache_hits += hits
        if len(self.unwritten) >= CACHE_BULK:
            self.cache_written()
            self.caching, self.unwritten = self.unwritten, VectorBuffer()
            self.cache_writing = self.cacher.submit(self.cache.put_buffer, self.caching)
        if upserted is not None:
            self.give_gathered()
            self._submit(batch, vectors, upserted)
            return
        self.gathered.append((batch, vectors))
        self.gathered_rows += len(batch)
        if self.gathered_rows >= HAND_OFF_ROWS or self._checkpoint_due():
            self.give_gathered()

    def give_gathered(self) -> None:
        """Hand the gathered batches to the writer as one."""
        if not self.gathered:
            return
        parts, self.gathered, self.gathered_rows = self.gathered, [], 0
        if len(parts) == 1:
            self._submit(*parts[0], None)
            return
        batch = list(chain.from_iterable(rows for rows, _ in parts))
        self._submit(batch, np.concatenate([vectors for _, vectors in parts]), None)

    def _submit(self, batch: Pending, vectors: np.ndarray, upserted: Upserted | None) -> None:
        """Write `batch` on the writer, once it has written the batch before."""
        self.drain()
        self.writing = self.writer.submit(self._write, batch, vectors, upserted)

    def _checkpoint_due(self) -> bool:
        interval = max(self.options.checkpoint_seconds, CHECKPOINT_SHARE * self.checkpoint_cost)
        return time.monotonic() - self.last_checkpoint >= interval

    def _prepare(self, batch: Pending) -> tuple[Pending, list[object]]:
        """Each row's input as the embedder takes it; a row it cannot use is rejected."""
        try:  # the usual batch: every row's input in one pass
            return batch, list(map(self.embedder.prepare, map(_ROW, batch)))
        except InputError:
            pass
        kept: Pending = []
        inputs: list[object] = []
        for row, digest in batch:
            try:
                inputs.append(self.embedder.prepare(row))
            except InputError as exc:
                self._reject_row(row, exc.reason, self.source.columns.input_field)
                continue
            kept.append((row, digest))
        return kept, inputs

    def drain(self) -> None:
        """Wait for the batch being written, raising what it raised and rejecting the records
        the store refused."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            for reject in writing.result():
                self.reject(reject)

    def cache_written(self) -> None:
        """Wait for the cache write in progress (raising what it raised)."""
        if self.cache_writing is not None:
            writing, self.cache_writing = self.cache_writing, None
            writing.result()
            self.caching = VectorBuffer()

    def _write(
        self, batch: Pending, vectors: np.ndarray, upserted: Upserted | None
    ) -> list[Reject]:
        """Upsert a batch (on the writer thread); returns the records the store refused."""
        store = self.writable_store()
        refused: list[Reject] = []
        parts = self._upsert_parts(store, batch, vectors) if upserted is None else upserted()
        for written, bad in parts:
            self.summary.upserted += len(written)
            ids = map(_ID, map(_ROW, written))
            self.uncommitted.extend(zip(ids, map(_DIGEST, written), strict=True))
            refused += bad
        if self._checkpoint_due():
            self._checkpoint()
        return refused

    def _upsert_parts(
        self, store: VectorStore, batch: Pending, vectors: np.ndarray
    ) -> Iterator[tuple[Pending, list[Reject]]]:
        """Upsert `batch` in parts the store takes; per part, what it wrote and refused."""
        step = max(1, store.capabilities.max_batch)
        for start in range(0, len(batch), step):
            part = batch[start : start + step]
            rows = list(map(_ROW, part))
            ids, metadata = list(map(_ID, rows)), metadata_of(rows)
            refused = upsert_records(store, ids, vectors[start : start + len(part)], metadata)
            yield self.written(part, refused)

    def written(self, part: Pending, refused: dict[int, str]) -> tuple[Pending, list[Reject]]:
        """`part`'s rows the store wrote, and rejects for those it `refused` (by index)."""
        if not refused:
            return part, []
        file, rejects = str(self.source.path), []
        for i, reason in sorted(refused.items()):
            row = part[i][0]
            why = f"the store refused the record: {reason}"
            rejects.append(Reject(file, row.row, row.id, refused_field(row), why))
        return [item for i, item in enumerate(part) if i not in refused], rejects

    # -- durability ---------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write what is gathered, make the store durable, record what it holds."""
        self.give_gathered()
        self.drain()
        self.cache_written()
        if len(self.unwritten):
            self.cache.put_buffer(self.unwritten)
            self.unwritten = VectorBuffer()
        self._checkpoint()

    def _checkpoint(self) -> None:
        started = time.monotonic()
        if self.uncommitted:
            assert self.store is not None
            self.store.flush()
            info = {"catalog": str(self.source.path.resolve()), "store": self.store_uri}
            info |= {"embedder": self.spec, "embedder_name": self.embedder.name}
            self.manifest.commit(self.uncommitted, info)
            self.uncommitted = []
        self.last_checkpoint = time.monotonic()
        self.checkpoint_cost = self.last_checkpoint - started

    def sync(self) -> None:
        """Delete from the store the ids of earlier runs that left the catalog."""
        if self.unread_ids:
            raise ValueError(
                f"--sync deleted nothing: {self.unread_ids} rejected row(s) have no readable "
                f"id, and their records may still be in the catalog (see {self.rejects.path})"
            )
        gone = [rid for rid in self.manifest.ids() if rid not in self.seen]
        if not gone or self.store is None:
            return
        for start in range(0, len(gone), SQL_BATCH):
            self.summary.deleted += self.store.delete(gone[start : start + SQL_BATCH])
        self.store.flush()
        self.manifest.remove(gone)


def read_size(batch_size: int) -> int:
    """How many records an ingest reads at a time: about READ_ROWS, in whole batches."""
    return batch_size * max(1, READ_ROWS // batch_size)
