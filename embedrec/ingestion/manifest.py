"""What ingestion remembers under `$EMBEDREC_CACHE`, beside the store itself.

A manifest per (catalog, store), an SQLite file under `manifests/`, holds each id's content
hash: sha256 of the embedder's name, the embedded input and the metadata. A row whose hash
is in the manifest is neither embedded nor upserted, so rerunning an unchanged catalog does
no work. An id enters the manifest only after the store has made it durable.

Which embedder built a store is kept in the store itself (see store_info.py). Stores written
by older versions have it only under `stores/` here, keyed by the store's location: that
record is still read, as a fallback, until the store's next write moves it into the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

from embedrec.common.settings import cache_root
from embedrec.ingestion.rows import Row
from embedrec.ingestion.values import metadata_json
from embedrec.stores.uri import parse_uri

LOCAL_SCHEMES = ("faiss", "qdrant+local", "qdrant+edge")
IDENTITY_OPTIONS = ("namespace",)
"""URI options that name a different store rather than tune the same one."""
SQL_BATCH = 500
_PAYLOAD = attrgetter("payload")
_METADATA_JSON = attrgetter("metadata_json")
_HEXDIGEST = type(hashlib.sha256()).hexdigest


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
    return cache_root() / "manifests" / f"{key}.sqlite"


def embedder_record_path(store_uri: str) -> Path:
    return cache_root() / "stores" / f"{_digest(store_key(store_uri))}.json"


def recorded_embedder(store_uri: str) -> Any:
    """What older versions recorded for this store in the cache (embedder spec, name, dim,
    modality), None when nothing readable is there."""
    path = embedder_record_path(store_uri)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ingested_catalog(store_uri: str) -> tuple[Path, list[str]] | None:
    """(catalog file, ids) from the newest manifest of an ingest into this store, if any;
    read only (the web app asks here rather than reading the cache's files itself)."""
    try:
        want = store_key(store_uri)
    except ValueError:
        return None
    folder = cache_root() / "manifests"
    found: tuple[float, Path, list[str]] | None = None
    for path in folder.glob("*.sqlite") if folder.is_dir() else ():
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            try:
                info = dict(db.execute("SELECT key, value FROM info").fetchall())
                if _key(info.get("store", "")) != want or "catalog" not in info:
                    continue
                ids = [row[0] for row in db.execute("SELECT id FROM items ORDER BY rowid")]
            except sqlite3.Error:
                continue
        stamp = path.stat().st_mtime
        if found is None or stamp > found[0]:
            found = (stamp, Path(info["catalog"]), ids)
    return None if found is None else (found[1], found[2])


def _key(uri: str) -> str | None:
    try:
        return store_key(uri)
    except ValueError:
        return None


def content_hash(embedder_name: str, row: Row) -> str:
    return content_hashes(embedder_name, [row])[0]


def content_hashes(embedder_name: str, rows: Iterable[Row]) -> list[str]:
    """Each row's content hash: sha256 of the embedder's name, NUL, the payload (UTF-8, or
    the image's bytes), NUL and the metadata's JSON. Text payloads are hashed in passes that
    run in C (one sha256 call a row, no Python step per row)."""
    rows = list(rows)
    payloads = list(map(_PAYLOAD, rows))
    jsons = list(map(_METADATA_JSON, rows))
    if None in jsons:
        jsons = [
            metadata_json(row.metadata) if text is None else text
            for row, text in zip(rows, jsons, strict=True)
        ]
    blobs: Iterable[bytes] | None = None
    if set(map(type, payloads)) <= {str}:
        texts = map("\0".join, zip(repeat(embedder_name), payloads, jsons, strict=False))
        with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate: encoded part by part
            blobs = list(map(str.encode, texts))
    if blobs is None:
        named = embedder_name.encode() + b"\0"
        blobs = [
            named + _payload_bytes(payload) + b"\0" + text.encode()
            for payload, text in zip(payloads, jsons, strict=True)
        ]
    return list(map(_HEXDIGEST, map(hashlib.sha256, blobs)))


def _payload_bytes(payload: str | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogateescape")


class IngestManifest:
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

    def info(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT key, value FROM info").fetchall())

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
        """Record `entries` (id, hash) in one transaction, in id order (each insert then
        lands near the one before it in the id index)."""
        entries = sorted(entries)
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


def unchanged(known: str | None, digest: str, op: str | None) -> bool:
    """A catalogue row needs no write: the manifest holds it with this hash, or a catalogue
    event removed an item the manifest never held. An event's edit (`op`) stands while this
    holds; a row changed since overrides it (the catalogue is newer then)."""
    return known == digest or (op == "removed" and known is None)


def live_edits_path(store_uri: str) -> Path:
    return cache_root() / "manifests" / f"live-{_digest(store_key(store_uri))}.sqlite"


class LiveEdits:
    """The catalogue events applied to one store (by the event consumer) since the batch
    ingests: item id -> "added", "changed" or "removed". An event's change stands until the
    catalogue's own row for that item changes: an ingest skips a row the manifest holds with
    the same hash (as for any unchanged row), keeps an item an event removed out of the
    store, and drops the edit of a row that changed after it (the catalogue is newer then)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS edits (id TEXT PRIMARY KEY, op TEXT)")

    @classmethod
    def of(cls, store_uri: str) -> LiveEdits:
        return cls(live_edits_path(store_uri))

    def close(self) -> None:
        self.db.close()

    def record(self, edits: Iterable[tuple[str, str]]) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO edits VALUES (?, ?)", edits)

    def ops(self, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.lock:  # the usual case, no event since the last ingest: nothing to look up
            if self.db.execute("SELECT NOT EXISTS (SELECT 1 FROM edits)").fetchone()[0]:
                return out
        for start in range(0, len(ids), SQL_BATCH):
            part = ids[start : start + SQL_BATCH]
            query = f"SELECT id, op FROM edits WHERE id IN ({','.join('?' * len(part))})"
            with self.lock:
                out.update(self.db.execute(query, part).fetchall())
        return out

    def all(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT id, op FROM edits").fetchall())

    def removed(self) -> set[str]:
        with self.lock:
            rows = self.db.execute("SELECT id FROM edits WHERE op = 'removed'").fetchall()
        return {rid for (rid,) in rows}

    def drop(self, ids: Iterable[str]) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM edits WHERE id = ?", ((i,) for i in ids))
