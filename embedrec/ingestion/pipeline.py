"""Catalog -> store: validate, embed (through the cache), upsert in batches, checkpoint.

A manifest per (catalog, store), an SQLite file under `$EMBEDREC_CACHE/manifests/`, holds
each id's content hash: sha256 of the embedder's name, the embedded input and the metadata.
A row whose hash is in the manifest is neither embedded nor upserted, so rerunning an
unchanged catalog does no work, and a changed row is embedded (the embedding cache still
answers when only its metadata changed) and upserted again.

Checkpoints (every `checkpoint_seconds`, spaced further when a flush is slow) make a run
resumable after a kill: an id enters the manifest only after
`store.flush()` has made it durable, so a killed run leaves rows that are in the store but
not the manifest (upserted again next time: an overwrite, never a duplicate) and never the
reverse. When the store holds fewer records than the manifest lists (it was deleted, or it
lives in memory), the manifest is reconciled with the store before anything is skipped.

Which embedder built a store is recorded in `$EMBEDREC_CACHE/stores/`, keyed by the store's
location, so that `embedrec query` embeds its query with the same model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from embedrec.ingestion.sources import Reject, Row, Source
from embedrec.stores import StoreNotFound, VectorStore, open_store
from embedrec.stores.uri import parse_uri

LOCAL_SCHEMES = ("faiss", "qdrant+local", "qdrant+edge")
IDENTITY_OPTIONS = ("namespace",)
"""URI options that name a different store rather than tune the same one."""
SQL_BATCH = 500
CHECKPOINT_SHARE = 20
"""Checkpoints are spaced at least this many times their own cost apart (a store that
rewrites its files on flush grows slower to flush), keeping them to ~5% of a run."""


def _cache_root() -> Path:
    from embedrec.ingestion.datasets import cache_root

    return cache_root()


def store_key(uri: str) -> str:
    """The store's identity: scheme and location (a local path made absolute) plus the
    options that select data (`namespace`), without tuning options such as `index` or `ef`."""
    parsed = parse_uri(uri)
    location = parsed.location
    if parsed.scheme in LOCAL_SCHEMES and location:
        location = str(Path(location).expanduser().resolve())
    key = f"{parsed.scheme}:{location}"
    kept = sorted((k, v) for k, v in parsed.options.items() if k in IDENTITY_OPTIONS)
    return key + "".join(f"?{k}={v}" for k, v in kept)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def manifest_path(catalog: Path, store_uri: str) -> Path:
    key = _digest(f"{Path(catalog).expanduser().resolve()}\n{store_key(store_uri)}")
    return _cache_root() / "manifests" / f"{key}.sqlite"


def _embedder_record_path(store_uri: str) -> Path:
    return _cache_root() / "stores" / f"{_digest(store_key(store_uri))}.json"


def record_embedder(store_uri: str, spec: str, name: str, dim: int, modality: str) -> None:
    path = _embedder_record_path(store_uri)
    info = {"store": store_key(store_uri), "embedder": spec, "name": name, "dim": dim}
    info["modality"] = modality
    if path.exists() and json.loads(path.read_text()) == info:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)


def recorded_embedder(store_uri: str) -> dict[str, Any] | None:
    """What `record_embedder` wrote for this store: embedder spec, name, dim, modality."""
    path = _embedder_record_path(store_uri)
    return json.loads(path.read_text()) if path.exists() else None


def content_hash(embedder_name: str, row: Row) -> str:
    h = hashlib.sha256(embedder_name.encode())
    h.update(b"\0")
    payload = row.payload
    h.update(payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(json.dumps(row.metadata, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


class Manifest:
    """id -> content hash of what the store durably holds from one catalog."""

    def __init__(self, path: Path | str):
        self.path = Path(path) if path != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, hash TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)")

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM items").fetchone()[0]

    def ids(self) -> Iterator[str]:
        with self.lock:
            rows = self.db.execute("SELECT id FROM items ORDER BY id").fetchall()
        for (rid,) in rows:
            yield rid

    def hashes(self, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(ids), SQL_BATCH):
            part = ids[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, hash FROM items WHERE id IN ({marks})"
            with self.lock:
                out.update(self.db.execute(query, part).fetchall())
        return out

    def commit(self, entries: Iterable[tuple[str, str]], info: dict[str, str] | None = None):
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)", entries)
            self.db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)", (info or {}).items())

    def remove(self, ids: Iterable[str]) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM items WHERE id = ?", ((i,) for i in ids))

    def clear(self) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM items")


@dataclass
class IngestOptions:
    batch_size: int = 256
    checkpoint_seconds: float = 5.0
    rejects: Path | None = None
    max_rejects: int | None = None
    sync: bool = False


@dataclass
class IngestSummary:
    rows_read: int = 0
    unchanged: int = 0
    embedded: int = 0
    cache_hits: int = 0
    upserted: int = 0
    rejected: int = 0
    deleted: int = 0
    seconds: float = 0.0
    rejects_path: Path | None = None
    manifest: Path | None = None
    aborted: str | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def items(self) -> list[tuple[str, str]]:
        rows = [
            ("rows read", f"{self.rows_read:,}"),
            ("unchanged", f"{self.unchanged:,}"),
            ("embedded", f"{self.embedded:,}"),
            ("cache hits", f"{self.cache_hits:,}"),
            ("upserted", f"{self.upserted:,}"),
            ("rejected", f"{self.rejected:,}"),
            ("deleted", f"{self.deleted:,}"),
            ("seconds", f"{self.seconds:.2f}"),
            ("rows/s", f"{self.rows_per_s:,.0f}"),
        ]
        if self.rejected and self.rejects_path is not None:
            rows.append(("rejects file", str(self.rejects_path)))
        return rows


class TooManyRejects(ValueError):
    """More rows were rejected than `max_rejects` allows; what landed is checkpointed."""

    def __init__(self, summary: IngestSummary, limit: int):
        self.summary = summary
        super().__init__(
            f"aborted after {summary.rejected} rejected rows (limit {limit}); "
            f"see {summary.rejects_path}. Rows already upserted are kept: fix the catalog "
            "and rerun to resume"
        )


class _Rejects:
    """The rejects file of this run, truncated when the run starts, written as rejects come."""

    def __init__(self, path: Path):
        self.path = path
        self.path.unlink(missing_ok=True)
        self._fh: IO[str] | None = None

    def write(self, reject: Reject) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


@dataclass
class _Run:
    source: Source
    store_uri: str
    spec: str
    embedder: Any
    cache: Any
    options: IngestOptions
    manifest: Manifest
    rejects: _Rejects
    progress: Callable[[int], None] | None
    summary: IngestSummary
    store: VectorStore | None = None
    seen: set[str] = field(default_factory=set)
    unread_ids: int = 0
    """Rejected rows whose id could not be read: --sync cannot tell whether they left."""
    uncommitted: list[tuple[str, str]] = field(default_factory=list)
    last_checkpoint: float = field(default_factory=time.monotonic)
    checkpoint_cost: float = 0.0
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    """Upserts and checkpoints run here, one batch behind the embedding of the next."""
    writing: Future | None = None

    def reject(self, reject: Reject) -> None:
        self.summary.rejected += 1
        self.rejects.write(reject)
        limit = self.options.max_rejects
        if limit is not None and self.summary.rejected > limit:
            self.summary.aborted = f"more than {limit} rejected rows"
            self.checkpoint()
            raise TooManyRejects(self.summary, limit)

    def open_existing(self) -> None:
        try:
            self.store = open_store(self.store_uri)
        except StoreNotFound:
            self.store = None
        if self.store is None:
            self.manifest.clear()
        elif self.store.count() < self.manifest.count():
            self._reconcile()

    def _reconcile(self) -> None:
        """Forget manifest ids the store lacks (it was rebuilt or lost writes)."""
        assert self.store is not None
        ids = list(self.manifest.ids())
        missing: list[str] = []
        for start in range(0, len(ids), SQL_BATCH):
            part = ids[start : start + SQL_BATCH]
            present = {r.id for r in self.store.fetch(part)}
            missing.extend(i for i in part if i not in present)
        self.manifest.remove(missing)

    def writable_store(self) -> VectorStore:
        if self.store is None:
            self.store = open_store(self.store_uri, dim=self.embedder.dim)
        record_embedder(
            self.store_uri, self.spec, self.embedder.name, self.store.dim, self.embedder.modality
        )
        return self.store

    def process(self, batch: list[tuple[Row, str]]) -> None:
        """Embed, upsert and (when due) checkpoint one batch of changed rows."""
        from embedrec.embedders import embed_cached

        if self.embedder.modality == "item":
            inputs = [{"id": row.id, **row.metadata} for row, _ in batch]
        elif self.source.columns.image is not None:
            batch, inputs = self._decode(batch)
        else:
            inputs = [row.payload for row, _ in batch]
        if not batch:
            return
        vectors, hits = embed_cached(self.embedder, inputs, self.cache)
        self.summary.embedded += len(batch) - hits
        self.summary.cache_hits += hits
        self.drain()
        self.writing = self.writer.submit(self._write, batch, vectors)

    def drain(self) -> None:
        """Wait for the batch being written, raising what it raised."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()

    def _write(self, batch: list[tuple[Row, str]], vectors: Any) -> None:
        store = self.writable_store()
        step = max(1, store.capabilities.max_batch)
        for start in range(0, len(batch), step):
            part = batch[start : start + step]
            store.upsert(
                [row.id for row, _ in part],
                vectors[start : start + len(part)],
                [row.metadata for row, _ in part],
            )
            self.summary.upserted += len(part)
        self.uncommitted.extend((row.id, digest) for row, digest in batch)
        interval = max(self.options.checkpoint_seconds, CHECKPOINT_SHARE * self.checkpoint_cost)
        if time.monotonic() - self.last_checkpoint >= interval:
            self._checkpoint()

    def _decode(self, batch: list[tuple[Row, str]]) -> tuple[list[tuple[Row, str]], list[Any]]:
        """Decode the images to embed, rejecting those that are not readable images."""
        from embedrec.embedders.image import decode_image

        kept, images = [], []
        for row, digest in batch:
            try:
                images.append(decode_image(row.payload))
            except ValueError as exc:
                field = self.source.columns.image
                reason = getattr(exc, "reason", str(exc))
                self.reject(Reject(str(self.source.path), row.row, row.id, field, reason))
                continue
            kept.append((row, digest))
        return kept, images

    def checkpoint(self) -> None:
        """Finish the batch being written, make the store durable, record what it holds."""
        self.drain()
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

    def run(self) -> None:
        pending: list[tuple[Row, str]] = []
        size = self.options.batch_size
        for chunk in self.source.chunks(size):
            rows: list[Row] = []
            for item in chunk:
                if item.id is not None:
                    self.seen.add(item.id)
                else:
                    self.unread_ids += 1
                if isinstance(item, Reject):
                    self.reject(item)
                else:
                    rows.append(item)
            self.summary.rows_read += len(chunk)
            known = self.manifest.hashes([row.id for row in rows])
            for row in rows:
                digest = content_hash(self.embedder.name, row)
                if known.get(row.id) == digest:
                    self.summary.unchanged += 1
                else:
                    pending.append((row, digest))
            while len(pending) >= size:
                self.process(pending[:size])
                pending = pending[size:]
            if self.progress is not None:
                self.progress(len(chunk))
        if pending:
            self.process(pending)
        self.checkpoint()
        if self.options.sync:
            if self.unread_ids:
                raise ValueError(
                    f"--sync deleted nothing: {self.unread_ids} rejected row(s) have no readable "
                    f"id, and their records may still be in the catalog (see {self.rejects.path})"
                )
            self.sync()

    def sync(self) -> None:
        gone = [rid for rid in self.manifest.ids() if rid not in self.seen]
        if not gone or self.store is None:
            return
        for start in range(0, len(gone), SQL_BATCH):
            self.summary.deleted += self.store.delete(gone[start : start + SQL_BATCH])
        self.store.flush()
        self.manifest.remove(gone)


def ingest(
    source: Source,
    store_uri: str,
    embedder_spec: str = "text",
    options: IngestOptions | None = None,
    *,
    embedder: Any = None,
    cache: Any = None,
    progress: Callable[[int], None] | None = None,
    manifest: Path | str | None = None,
) -> IngestSummary:
    """Load `source` into the store at `store_uri`; returns what happened.

    `embedder` (default: `get_embedder(embedder_spec)`, its model loaded only when a row
    needs embedding) and `cache` (default: the embedding cache under `$EMBEDREC_CACHE`) may
    be passed in. Raises `TooManyRejects` past `options.max_rejects`, after checkpointing.
    An item embedder (modality "item", e.g. `two-tower:MODEL`) gets each record as a dict of
    its id (`id`) and metadata, so the metadata columns must carry the model's item features.
    """
    from embedrec.embedders import EmbeddingCache, get_embedder

    options = options or IngestOptions()
    if options.batch_size < 1:
        raise ValueError(f"batch size must be positive, got {options.batch_size}")
    started = time.perf_counter()
    embedder = embedder if embedder is not None else get_embedder(embedder_spec)
    modality = source.columns.modality
    if embedder.modality not in (modality, "item"):
        flag = "--text" if embedder.modality == "text" else "--image-col"
        raise ValueError(
            f"embedder {embedder.name!r} takes {embedder.modality} input, but the catalog "
            f"mapping gives {modality} (use {flag})"
        )
    own_cache = cache is None
    cache = EmbeddingCache() if own_cache else cache
    manifest_file = Path(manifest) if manifest else manifest_path(source.path, store_uri)
    rejects_path = options.rejects or manifest_file.with_suffix(".rejects.jsonl")
    summary = IngestSummary(rejects_path=rejects_path, manifest=manifest_file)
    with closing(Manifest(manifest_file)) as book:
        run = _Run(
            source=source,
            store_uri=store_uri,
            spec=embedder_spec,
            embedder=embedder,
            cache=cache,
            options=options,
            manifest=book,
            rejects=_Rejects(rejects_path),
            progress=progress,
            summary=summary,
        )
        try:
            run.open_existing()
            run.run()
        finally:
            run.writer.shutdown(wait=True)
            run.rejects.close()
            if own_cache:
                cache.close()
            if run.store is not None:
                run.store.close()
            summary.seconds = time.perf_counter() - started
    return summary
