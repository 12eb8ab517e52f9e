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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from embedrec.common.settings import cache_root
from embedrec.common.string_blobs import is_digests, join_digests, pack, unpack
from embedrec.embedders.keyed import merge_from
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
    """(catalog file, ids in the order they were first ingested) from the newest manifest
    of an ingest into this store, if any; read only (the web app asks here rather than
    reading the cache's files itself)."""
    try:
        want = store_key(store_uri)
    except ValueError:
        return None
    folder = cache_root() / "manifests"
    found: tuple[float, Path, list[str]] | None = None
    for path in folder.glob("*.sqlite") if folder.is_dir() else ():
        read = read_manifest(path, lambda i: _key(i.get("store", "")) == want and "catalog" in i)
        if read is None:
            continue
        stamp = path.stat().st_mtime
        if found is None or stamp > found[0]:
            found = (stamp, Path(read[0]["catalog"]), list(read[1]))
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
    """id -> content hash of what the store durably holds from one catalog, as `Segments`
    of packed entries. The entries are read into a dict when first needed
    (a lookup is then a dict's, with no SQL per id), then kept current: a commit adds its
    own, and the segments other connections wrote are loaded when SQLite's `data_version`
    says they wrote some. Commits, `remove` and `clear` are each one transaction, so that
    a killed process leaves the manifest as it was before (or after) one, and concurrent
    writers each land whole."""

    def __init__(self, path: Path | str, timeout: float = 60.0):
        self.path = Path(path) if path != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            str(path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self.lock = threading.Lock()
        self.segments = Segments(self.db, path)
        self.entries: Entries | None = None
        """None until needed (a first ingest never reads its own commits back)."""
        self.seen = 0
        """The newest segment applied to `entries`."""
        self.version = -1
        """`PRAGMA data_version` when `entries` was last brought up to date."""
        self.db.execute("PRAGMA page_size=16384")  # a new file's: before WAL mode fixes it
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.lock, self._transaction():
            for statement in SCHEMA:
                self.db.execute(statement)
            self.segments.migrate()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction (the caller holds the lock); on failure, rolled back and
        `entries` dropped, to be read again when next needed."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.entries = None
            raise

    def _refresh(self) -> Entries:
        """`entries` as of this transaction's snapshot (the caller holds the lock and a
        transaction): the segments written since `seen` applied."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if self.entries is not None and version == self.version:
            return self.entries
        based, newer = self.segments.newer(self.seen if self.entries is not None else 0)
        if based or self.entries is None:
            self.entries = {}
        self.segments.apply(newer, self.entries)
        self.seen = newer[-1] if newer else self.seen
        self.version = version
        return self.entries

    def _current(self) -> Entries:
        """`entries`, brought up to date (the caller holds the lock)."""
        changed = self.db.execute("PRAGMA data_version").fetchone()[0] != self.version
        if self.entries is not None and not changed:
            return self.entries
        self.db.execute("BEGIN")
        try:
            return self._refresh()
        finally:
            self.db.execute("COMMIT")

    def count(self) -> int:
        with self.lock:
            if self.entries is None:
                held = "SELECT EXISTS (SELECT 1 FROM segments WHERE n > 0)"
                if not self.db.execute(held).fetchone()[0]:
                    return 0
            return len(self._current())

    def info(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT key, value FROM info").fetchall())

    def ids(self) -> Iterator[str]:
        """The ids, in the order they first entered the manifest."""
        with self.lock:
            ids = list(self._current())
        yield from ids

    def hashes(self, ids: list[str]) -> dict[str, str]:
        with self.lock:
            get = self._current().get
        return {i: h for i in ids if (h := get(i)) is not None}

    def commit(self, entries: Iterable[tuple[str, str]], info: dict[str, str] | None = None):
        """Record `entries` (id, hash; of a repeated id, the last hash) and `info` in one
        transaction, as one segment."""
        pairs = list(entries)
        ids, hashes = list(map(itemgetter(0), pairs)), list(map(itemgetter(1), pairs))
        packed = pack(ids, "id"), pack(hashes, "hash")
        with self.lock:
            with self._transaction():
                live = self._refresh() if self.entries is not None else None
                newest = self.seen
                if pairs:
                    newest = self.segments.insert(*packed, len(pairs))
                    newest = self.segments.merge() or newest  # of segments `live` holds
                self.db.executemany(
                    "INSERT OR REPLACE INTO info VALUES (?, ?)", (info or {}).items()
                )
            if live is not None:
                live.update(pairs)
                self.seen = newest

    def remove(self, ids: Iterable[str]) -> None:
        """Forget `ids`: the entries left are written as one base segment."""
        with self.lock, self._transaction():
            entries = self._refresh()
            gone = sum(entries.pop(i, None) is not None for i in ids)
            if gone:
                self.seen = self.segments.write(entries, base=True)

    def clear(self) -> None:
        with self.lock, self._transaction():
            self.segments.write({}, base=True)
            self.entries, self.seen = None, 0


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " base INTEGER NOT NULL, n INTEGER NOT NULL, ids BLOB NOT NULL, hashes BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)",
)
MERGE_AFTER = 16
"""Segments are merged only once there are more: a reader's cost is per entry, not per
segment, so merging serves to bound the file's rows and drop replaced hashes."""
Entries = dict[str, str]
"""id -> hash, in the order ids first entered the manifest."""


class ManifestError(ValueError):
    """The manifest file is unreadable."""


@dataclass
class Segments:
    """The segments of one manifest file through one connection (the caller's lock and
    transaction around each call).

    Each commit is one row of the `segments` table: its ids and their hashes, each list
    packed into one blob (string_blobs.py), so committing 25k entries costs a few SQLite
    calls rather than one per entry. The segments, applied oldest first (a later hash
    wins), are the manifest; a reader unpacks them into one dict, then loads only those
    written since (AUTOINCREMENT: ids are never reused). A `base` segment holds the whole
    manifest as of its writing (`remove`, `clear`, a merge of every segment), and those
    before it are deleted in its transaction: a reader that finds a new one starts over.

    Past MERGE_AFTER segments, a commit merges the newest where they outgrow the one
    before (`merge_from`, as the embedding cache's segments) inside its transaction. A
    merged segment holds what those it replaces held (the newest hash of each id), so a
    reader that had applied them may apply it again and change nothing.

    Manifests of earlier versions hold a table `items`, one row per id: opening one for
    writing moves its rows into a segment and drops the table, in one transaction."""

    db: sqlite3.Connection
    path: Path | str

    def corrupt(self, reason: str) -> ManifestError:
        return ManifestError(f"ingest manifest {self.path} is unreadable: {reason}")

    def newer(self, seen: int) -> tuple[bool, list[int]]:
        """(whether a base segment is among them, the segments to apply) of those after
        `seen`: from the newest base on, when there is one."""
        rows = self.db.execute(
            "SELECT id, base FROM segments WHERE id > ? ORDER BY id", (seen,)
        ).fetchall()
        bases = [i for i, (_, base) in enumerate(rows) if base]
        start = bases[-1] if bases else 0
        return bool(bases), [segment for segment, _ in rows[start:]]

    def apply(self, segments: Iterable[int], into: Entries) -> None:
        """Apply `segments` (in order) to `into`."""
        for segment in segments:
            n, ids, hashes = self.packed(segment)
            keys, values = self.unpacked(segment, ids, n), self.unpacked(segment, hashes, n)
            into.update(zip(keys, values, strict=True))

    def packed(self, segment: int) -> tuple[int, bytes, bytes]:
        return self.db.execute(
            "SELECT n, ids, hashes FROM segments WHERE id = ?", (segment,)
        ).fetchone()

    def unpacked(self, segment: int, blob: bytes, n: int) -> list[str]:
        try:
            return unpack(blob, n)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.corrupt(f"segment {segment}: {exc}") from None

    def insert(self, ids: bytes, hashes: bytes, n: int, *, base: bool = False) -> int:
        """A new segment of `n` packed entries; its id. A base segment replaces all others."""
        cursor = self.db.execute(
            "INSERT INTO segments (base, n, ids, hashes) VALUES (?, ?, ?, ?)",
            (int(base), n, ids, hashes),
        )
        segment = cursor.lastrowid
        assert segment is not None
        if base:
            self.db.execute("DELETE FROM segments WHERE id < ?", (segment,))
        return segment

    def write(self, entries: Entries, *, base: bool = False) -> int:
        ids, hashes = pack(list(entries), "id"), pack(list(entries.values()), "hash")
        return self.insert(ids, hashes, len(entries), base=base)

    def merge(self) -> int | None:
        """Past MERGE_AFTER segments, merge the newest where they outgrow the one before into
        one segment (in the caller's write transaction); its id, None when nothing merged."""
        sizes = self.db.execute("SELECT id, n FROM segments ORDER BY id").fetchall()
        start = merge_from([n for _, n in sizes])
        if len(sizes) <= MERGE_AFTER or start >= len(sizes):
            return None
        first = sizes[start][0]
        segment = self._merged([segment for segment, _ in sizes[start:]], base=start == 0)
        self.db.execute("DELETE FROM segments WHERE id >= ? AND id < ?", (first, segment))
        return segment

    def _merged(self, segments: list[int], *, base: bool) -> int:
        """A new segment holding what `segments` (oldest first) hold: their packed hashes
        joined as they are where no id repeats and all are digests, else unpacked and
        packed again, a later segment's hash winning. `base`: they are all the segments
        (the first may be a base, which the merged one then stands for)."""
        ids: list[str] = []
        packed = [self.packed(segment) for segment in segments]
        for segment, (n, blob, _) in zip(segments, packed, strict=True):
            ids += self.unpacked(segment, blob, n)
        digests = [hashes for _, _, hashes in packed if is_digests(hashes)]
        if len(digests) < len(packed) or len(set(ids)) < len(ids):
            merged: Entries = {}
            self.apply(segments, merged)
            return self.write(merged, base=base)
        return self.insert(pack(ids, "id"), join_digests(digests), len(ids), base=base)

    def has(self, table: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self.db.execute(query, (table,)).fetchone() is not None

    def legacy(self) -> Entries:
        """The rows of an earlier version's `items` table, in the order they were written."""
        return dict(self.db.execute("SELECT id, hash FROM items ORDER BY rowid").fetchall())

    def migrate(self) -> None:
        """Move an earlier version's `items` rows into a segment (the newest: they were
        written by an earlier version after this file's segments, if it has any) and drop
        the table, in the caller's write transaction."""
        if self.has("items"):
            rows = self.legacy()
            if rows:
                self.write(rows)
            self.db.execute("DROP TABLE items")


def read_manifest(
    path: Path, wanted: Callable[[dict[str, str]], bool] = lambda info: True
) -> tuple[dict[str, str], Entries] | None:
    """(info, entries) of the manifest file at `path`, opened read only (an earlier
    version's file as it is); None if it is not a readable manifest or `wanted(info)` is
    false (its entries are then not read)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        db.execute("BEGIN")
        info = dict(db.execute("SELECT key, value FROM info").fetchall())
        if not wanted(info):
            return None
        store = Segments(db, path)
        entries: Entries = {}
        if store.has("segments"):
            store.apply(store.newer(0)[1], entries)
        if store.has("items"):  # after the segments, as `migrate` orders them
            entries.update(store.legacy())
        return info, entries
    except (sqlite3.Error, ManifestError):
        return None
    finally:
        db.close()


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
