"""Content-hash keyed embedding cache on disk, so an unchanged item is never embedded twice.

Storage is one SQLite file in WAL mode: a write is a transaction, so a process killed
mid-write (kill -9) leaves the previous state intact, readers never block the writer, and
several processes may share the cache (writers wait on each other, up to `timeout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import ChainMap
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.common.settings import cache_root
from embedrec.embedders.base import Embedder, InputError

_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)"
_F4 = np.dtype("<f4")
_SQL_VARS = 500  # keys per SELECT ... IN (...), below SQLite's parameter limit
_PAGE_SIZE = "PRAGMA page_size=16384"
"""Pages of 16 KiB (SQLite's default is 4) for a new cache: inserting at random keys then
splits and touches fewer pages, about a fifth less CPU per vector written (an existing
file keeps its page size)."""
_PAGE_CACHE = "PRAGMA cache_size=-32768"
"""Each connection's page cache (32 MiB, SQLite's default is 2) holds the key index's pages
across bulk writes and lookups: the keys are hashes, so each lands on a random page."""
_WAL_CHECKPOINT = "PRAGMA wal_autocheckpoint=8192"
"""The WAL is copied back every 32 MiB rather than every 4; with the page cache, about a
quarter less CPU per vector written."""


def default_cache_dir() -> Path:
    """`$EMBEDREC_CACHE/embeddings` (EMBEDREC_CACHE defaults to ~/.cache/embedrec)."""
    return cache_root() / "embeddings"


class EmbeddingCache:
    """Maps content keys (see `content_key`) to float32 vectors. Reads and writes go through
    connections of their own, so that a reader (e.g. ingestion's embedding thread) never
    waits for a bulk write in progress on another thread."""

    def __init__(self, root: Path | str | None = None, timeout: float = 60.0) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "embeddings.sqlite3"
        self._write_lock, self._read_lock = threading.Lock(), threading.Lock()
        self._db = self._connect(timeout)
        try:
            self._db.execute(_PAGE_SIZE)  # before WAL mode, which fixes it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: no loss on a crash
            self._db.execute(_PAGE_CACHE)
            self._db.execute(_WAL_CHECKPOINT)
            self._db.execute(_SCHEMA)
            self._reader = self._connect(timeout)
            self._reader.execute(_PAGE_CACHE)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"embedding cache {self.path} is unreadable: {exc}") from exc

    def _connect(self, timeout: float) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        with self._read_lock:
            for start in range(0, len(wanted), _SQL_VARS):
                chunk = wanted[start : start + _SQL_VARS]
                rows = self._reader.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype="<f4")
        return found

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Store all of `vectors` in one transaction (all or nothing), in key order (each
        insert then lands near the one before it in the key index)."""
        rows = sorted((k, _blob(v)) for k, v in vectors.items())
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._read_lock, self._write_lock:
            self._reader.close()
            self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blob(vector: np.ndarray) -> bytes:
    if isinstance(vector, np.ndarray) and vector.dtype == _F4:
        return vector.tobytes()
    return np.asarray(vector, dtype=_F4).tobytes()


def _item_bytes(item: Any, modality: str, index: int) -> bytes:
    """The content an embedding depends on. For images, a path and the raw bytes of the same
    file give the same key; for text, the UTF-8 string."""
    if isinstance(item, str) and modality != "image":
        try:
            return b"text\0" + item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(index, f"text is not valid Unicode: {exc}") from None
    if isinstance(item, (str, os.PathLike)):
        try:
            return b"file\0" + Path(item).read_bytes()
        except FileNotFoundError:
            raise InputError(index, f"file {os.fspath(item)!r} not found") from None
        except OSError as exc:
            raise InputError(index, f"cannot read file {os.fspath(item)!r}: {exc}") from None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return b"file\0" + bytes(item)
    if isinstance(item, np.ndarray):
        head = f"array\0{item.dtype.str}{item.shape}\0".encode()
        return head + np.ascontiguousarray(item).tobytes()
    if type(item).__module__.startswith("PIL."):
        return f"pil\0{item.mode}{item.size}\0".encode() + item.tobytes()
    try:
        return b"json\0" + json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        reason = f"cannot hash a {type(item).__name__} for the cache: {exc}"
        raise InputError(index, reason) from None


def content_key(embedder_name: str, item: Any, modality: str = "text", index: int = 0) -> str:
    """sha256 of the embedder's name and the item's content (hex)."""
    h = hashlib.sha256(embedder_name.encode("utf-8") + b"\0")
    h.update(_item_bytes(item, modality, index))
    return h.hexdigest()


def content_keys(embedder_name: str, items: Sequence[Any], modality: str = "text") -> list[str]:
    """`[content_key(embedder_name, item, modality, i) ...]`, the name hashed once."""
    named = hashlib.sha256(embedder_name.encode("utf-8") + b"\0")
    keys: list[str] = []
    for i, item in enumerate(items):
        h = named.copy()
        h.update(_item_bytes(item, modality, i))
        keys.append(h.hexdigest())
    return keys


def embed_cached(
    embedder: Embedder,
    items: Sequence[Any],
    cache: EmbeddingCache,
    chunk_size: int = 1024,
    *,
    unwritten: MutableMapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for `items` in order, and how many came from the cache. Only the misses are
    embedded (a duplicate within `items` once), in chunks that are cached as they finish,
    so an interrupted call keeps what it computed.

    `unwritten` is a write-behind buffer: vectors computed but not yet in `cache`. It is
    looked up with the cache, and new vectors go into it rather than into the cache; the
    caller writes it with `cache.put_many` later, in bulk (one transaction for many calls:
    about half the cost per row of a transaction per call)."""
    items = list(items)
    keys = content_keys(embedder.name, items, embedder.modality)
    found = cached_vectors(cache, keys, embedder.dim, unwritten or {})
    n_hits = sum(k in found for k in keys)
    todo: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in found:
            todo.setdefault(key, i)
    pending = list(todo.items())
    embedded: list[np.ndarray] = []
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        try:
            vectors = embedder.embed([items[i] for _, i in chunk])
        except InputError as exc:
            raise InputError(chunk[exc.index][1], exc.reason) from None
        if vectors.shape != (len(chunk), embedder.dim):
            raise ValueError(
                f"embedder {embedder.name} returned shape {vectors.shape} for "
                f"{len(chunk)} items of dim {embedder.dim}"
            )
        new = dict(zip((key for key, _ in chunk), vectors, strict=True))
        if unwritten is None:
            cache.put_many(new)
        else:  # into a ChainMap's first layer as a dict: `update` would set each key in Python
            (unwritten.maps[0] if isinstance(unwritten, ChainMap) else unwritten).update(new)
        found.update(new)
        embedded.append(vectors)
    if not items:
        return np.empty((0, embedder.dim), dtype=np.float32), 0
    if len(pending) == len(items):  # every item new and distinct: the embedder's rows in order
        return np.concatenate(embedded).astype(np.float32, copy=False), 0
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False), n_hits


def cached_vectors(
    cache: EmbeddingCache, keys: list[str], dim: int, unwritten: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The vectors of `keys` already computed (in `unwritten` or the cache) and of `dim`."""
    maps = unwritten.maps if isinstance(unwritten, ChainMap) else [unwritten]
    found: dict[str, np.ndarray] = {}
    for layer in reversed(maps):  # a ChainMap's layers looked up as dicts: a tenth the cost
        found.update((k, layer[k]) for k in keys if k in layer)
    found |= cache.get_many(k for k in keys if k not in found)
    return {k: v for k, v in found.items() if v.shape == (dim,)}
