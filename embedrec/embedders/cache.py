"""Content-hash keyed embedding cache on disk, so an unchanged item is never embedded twice.

Storage is one SQLite file in WAL mode: a write is a transaction, so a process killed
mid-write (kill -9) leaves the previous state intact, readers never block the writer, and
several processes may share the cache (writers wait on each other, up to `timeout`).

Each write is one row of the `segments` table: its keys (32-byte sha256 digests, sorted, as
one blob) and their vectors (one float32 matrix blob), so a bulk write costs a few SQLite
calls rather than one per vector. A reader keeps the key arrays of the segments it has seen
in memory, looks a batch of keys up with `np.searchsorted` behind a prefix filter
(keyed.py), and reads only the rows it needs from a segment's blob. It opens a read
transaction only where `PRAGMA data_version` says another connection committed since it
loaded the segments, or to read vectors it does not hold: a batch of new keys, or of keys
whose vectors it holds, costs no SQLite call but that pragma. Past MERGE_AFTER
segments of a width, a write merges the newest where they outgrow the one before
(`merge_from`): about log2(N / write) segments for N vectors, each vector rewritten about as
many times; merging is part of the write's transaction, so
SQLite's write lock proves no other writer holds the segments it replaces, and a reader
keeps the snapshot it began with. Caches written by earlier versions hold a `vectors` table
of one row per hex key: it is still read (after the segments), and no longer written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from embedrec.common.settings import cache_root
from embedrec.embedders.keyed import (
    KEY,
    KeyIndex,
    PrefixFilter,
    VectorBuffer,
    digests_of,
    first_found,
    hex_of,
    in_index,
    merge_from,
    prefixes,
    sorted_unique,
)

_SEGMENTS = (
    "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " dim INTEGER NOT NULL, keys BLOB NOT NULL, vectors BLOB NOT NULL)"
)
"""AUTOINCREMENT: an id is never reused, so a reader that has loaded segments up to id N
loads those above N when it next looks, and drops those merged away."""
_F4 = np.dtype("<f4")
_SQL_VARS = 500  # keys per SELECT ... IN (...) of the old table, below SQLite's limit
_PAGE_SIZE = "PRAGMA page_size=16384"
"""Pages of 16 KiB (SQLite's default is 4) for a new cache: a segment's blobs span fewer
overflow pages (an existing file keeps its page size)."""
FILTER_BITS = 24
"""The reader's `PrefixFilter` (16 MiB): a new key is looked for in no segment but about
one in 17 at a million keys held."""
MERGE_AFTER = 8
"""Segments of a width are merged only once there are more (each lookup searches them all)."""
MERGE_LIMIT = 1 << 28
"""A segment whose vectors pass this many bytes is not merged again (a merge holds the
segments it merges in memory)."""
READ_HELD = 1 << 26
"""Bytes of segment vectors a reader keeps in memory once read: a segment is read whole on
its first hit while they fit (later hits cost an index), else row by row (each a call:
about 12 µs a hit against 3.5 for 50k x 384-d, benchmarks/embedding_cache.py). 64 MiB, not
more: every process that embeds through the cache (a service worker too) may hold this."""


class _NotInMemory(Exception):
    """Vectors to read from the file, in a read transaction."""


def _rows_in_memory(segment: _Segment, at: np.ndarray) -> np.ndarray:
    if segment.vectors is None:
        raise _NotInMemory
    return segment.vectors[at]


def default_cache_dir() -> Path:
    """`$EMBEDREC_CACHE/embeddings` (EMBEDREC_CACHE defaults to ~/.cache/embedrec)."""
    return cache_root() / "embeddings"


@dataclass
class _Segment:
    id: int
    dim: int
    index: KeyIndex
    vectors: np.ndarray | None = None
    """Read whole and kept (READ_HELD)."""


class EmbeddingCache:
    """Maps content digests (see `content_digests`) to float32 vectors. Reads and writes go
    through connections of their own, so that a reader (e.g. ingestion's embedding thread)
    never waits for a bulk write in progress on another thread."""

    def __init__(self, root: Path | str | None = None, timeout: float = 60.0) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "embeddings.sqlite3"
        self._write_lock, self._read_lock = threading.Lock(), threading.RLock()
        self._segments: list[_Segment] = []
        """Those the reader has loaded, the newest first."""
        self._seen = 0
        self._held = 0
        """Bytes of `_Segment.vectors` kept."""
        self._filter = PrefixFilter(FILTER_BITS)
        """Of every segment loaded."""
        self._version: int | None = None
        """`PRAGMA data_version` as of the segments loaded: a reader that finds it unchanged
        has them all (it counts the commits of other connections, the writer's included)."""
        self._db = self._connect(timeout)
        try:
            self._db.execute(_PAGE_SIZE)  # before WAL mode, which fixes it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: no loss on a crash
            self._db.execute(_SEGMENTS)
            self._legacy = self._has_old_rows()
            self._reader = self._connect(timeout)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._unreadable(exc) from exc

    def _connect(self, timeout: float) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )

    def _has_old_rows(self) -> bool:
        """The file holds vectors of the old format (looked up after the segments)."""
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vectors'"
        if self._db.execute(old).fetchone() is None:
            return False
        return self._db.execute("SELECT EXISTS (SELECT 1 FROM vectors)").fetchone()[0] == 1

    def _unreadable(self, reason: object) -> ValueError:
        return ValueError(f"embedding cache {self.path} is unreadable: {reason}")

    # -- reading ------------------------------------------------------------------------------

    def find(
        self, digests: np.ndarray, prefix: np.ndarray, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `digests` the cache holds as `dim`-d vectors, those vectors);
        `prefix`: `prefixes(digests)`. One snapshot of the file: a read transaction, unless
        `_from_memory` answers."""
        found = self._from_memory(digests, prefix, dim)
        if found is not None:
            return found
        with self._reading():
            finders = [lambda d, p: self._in_segments(d, p, dim)]
            if self._legacy:
                finders.append(lambda d, _: self._find_legacy(d, dim))
            return first_found(finders, digests, prefix, dim)

    def _from_memory(
        self, digests: np.ndarray, prefix: np.ndarray, dim: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """`find` without a transaction (None where it cannot): the segments loaded are
        those of the file as it is (`PRAGMA data_version`, SQLite's count of the commits of
        other connections, has not moved since they were loaded), their keys are in memory,
        and so are the vectors found (else they are read in a transaction); no old table."""
        with self._read_lock:
            if self._legacy or self._version is None:
                return None
            try:
                if self._data_version() != self._version:
                    return None
            except sqlite3.DatabaseError as exc:
                raise self._unreadable(exc) from exc
            try:
                return self._in_segments(digests, prefix, dim, _rows_in_memory)
            except _NotInMemory:
                return None

    def _data_version(self) -> int:
        return int(self._reader.execute("PRAGMA data_version").fetchone()[0])

    def _in_segments(
        self,
        digests: np.ndarray,
        prefix: np.ndarray,
        dim: int,
        read: Callable[[_Segment, np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`find` in the segments alone (in a read transaction, unless `read` reads rows
        without one)."""
        read = read or self._read_rows
        held = [in_index(s.index, partial(read, s)) for s in self._segments if s.dim == dim]
        return first_found(held, digests, prefix, dim, self._filter)

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The vectors of hex `keys` the cache holds, by key, of any width."""
        wanted = list(dict.fromkeys(keys))
        digests = digests_of(wanted)
        prefix = prefixes(digests)
        found: dict[str, np.ndarray] = {}
        with self._reading():
            for dim in dict.fromkeys(s.dim for s in self._segments):
                at, rows = self._in_segments(digests, prefix, dim)
                found |= {wanted[i]: row for i, row in zip(at.tolist(), rows, strict=True)}
            if self._legacy:
                found |= self._legacy_rows([k for k in wanted if k not in found])
        return found

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A read transaction with the segments loaded as of its snapshot (nested: the one
        already open)."""
        with self._read_lock:
            if self._reader.in_transaction:
                yield
                return
            try:
                self._reader.execute("BEGIN")
                version = self._data_version()  # begins the snapshot
                if version != self._version:  # another connection committed
                    self._refresh()
                    self._version = version
                yield
            except sqlite3.DatabaseError as exc:
                raise self._unreadable(exc) from exc
            finally:
                if self._reader.in_transaction:
                    self._reader.execute("COMMIT")

    def _refresh(self) -> None:
        """Forget segments merged away; load the keys of those written since (in a read
        transaction)."""
        ids = {i for (i,) in self._reader.execute("SELECT id FROM segments")}
        self._segments = [s for s in self._segments if s.id in ids]
        self._held = sum(s.vectors.nbytes for s in self._segments if s.vectors is not None)
        if ids and max(ids) > self._seen:
            rows = self._reader.execute(
                "SELECT id, dim, keys FROM segments WHERE id > ? ORDER BY id DESC", (self._seen,)
            )
            self._segments[:0] = [self._loaded(*row) for row in rows]
            self._seen = max(ids)

    def _loaded(self, segment: int, dim: int, keys: bytes) -> _Segment:
        if len(keys) % KEY.itemsize or dim < 1:
            raise self._corrupt(segment, f"{len(keys)} bytes of keys, dim {dim}")
        digests = np.frombuffer(keys, dtype=KEY)
        if not np.all(digests[1:] > digests[:-1]):
            raise self._corrupt(segment, "its keys are not sorted")
        index = KeyIndex.of(digests)
        self._filter.add(index.prefix)
        return _Segment(segment, dim, index)

    def _corrupt(self, segment: int, reason: str) -> ValueError:
        return self._unreadable(f"segment {segment} is corrupt ({reason})")

    def _read_rows(self, segment: _Segment, at: np.ndarray) -> np.ndarray:
        """Rows `at` of a segment's vectors: from memory, else the blob read whole (and kept)
        while READ_HELD allows, else each row alone."""
        if segment.vectors is not None:
            return segment.vectors[at]
        width = segment.dim * _F4.itemsize
        out = np.empty((len(at), segment.dim), dtype=_F4)
        with self._reader.blobopen("segments", "vectors", segment.id, readonly=True) as blob:
            if len(blob) != len(segment.index) * width:
                raise self._corrupt(segment.id, f"{len(blob)} bytes of vectors")
            if self._held + len(blob) <= READ_HELD:
                whole = np.frombuffer(blob.read(), dtype=_F4)
                segment.vectors = whole.reshape(-1, segment.dim)
                self._held += len(blob)
                return segment.vectors[at]
            for j, pos in enumerate(at.tolist()):
                out[j] = np.frombuffer(blob[pos * width : (pos + 1) * width], dtype=_F4)
        return out

    def _legacy_rows(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Rows of the old one-row-per-key table, by hex key."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), _SQL_VARS):
            chunk = keys[start : start + _SQL_VARS]
            marks = ",".join("?" * len(chunk))
            rows = self._reader.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk
            )
            found |= {key: np.frombuffer(blob, dtype=_F4) for key, blob in rows}
        return found

    def _find_legacy(self, digests: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        keys = hex_of(digests)
        rows = self._legacy_rows(keys)
        at = [i for i, k in enumerate(keys) if k in rows and rows[k].shape == (dim,)]
        found = [rows[keys[i]] for i in at]
        return np.array(at, dtype=np.intp), np.array(found, dtype=_F4).reshape(-1, dim)

    def __len__(self) -> int:
        """Distinct keys held (the old table's rows counted as they are)."""
        with self._reading():
            keys = [s.index.keys for s in self._segments]
            n = len(np.unique(np.concatenate(keys))) if keys else 0
            if self._legacy:
                n += int(self._reader.execute("SELECT count(*) FROM vectors").fetchone()[0])
        return n

    # -- writing ------------------------------------------------------------------------------

    def put(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Store `vectors` (one row per digest; of a repeated digest, the last) as one
        segment, in one transaction: all or nothing."""
        if not len(digests):
            return
        vectors = np.asarray(vectors, dtype=_F4)
        if vectors.ndim != 2 or len(vectors) != len(digests):
            raise ValueError(f"{len(digests)} keys for vectors of shape {vectors.shape}")
        keys, rows = sorted_unique(np.asarray(digests, dtype=KEY), vectors)
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(keys, rows)
                self._merge(rows.shape[1])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """`put` by hex key (vectors of one width)."""
        if vectors:
            self.put(digests_of(list(vectors)), np.stack(list(vectors.values())))

    def put_buffer(self, buffer: VectorBuffer) -> None:
        """`put` what `buffer` holds."""
        self.put(*buffer.contents())

    def _insert(self, keys: np.ndarray, rows: np.ndarray) -> None:
        self._db.execute(
            "INSERT INTO segments (dim, keys, vectors) VALUES (?, ?, ?)",
            (rows.shape[1], np.ascontiguousarray(keys), np.ascontiguousarray(rows)),
        )

    def _merge(self, dim: int) -> None:
        """Past MERGE_AFTER segments of `dim`, merge the newest into one where they outgrow
        the one before them (in the writer's transaction); segments past MERGE_LIMIT stay
        as they are."""
        sizes = self._db.execute(
            "SELECT id, length(keys) / ?, length(vectors) FROM segments WHERE dim = ? ORDER BY id",
            (KEY.itemsize, dim),
        ).fetchall()
        frozen = [i for i, (_, _, size) in enumerate(sizes) if size > MERGE_LIMIT]
        sizes = sizes[frozen[-1] + 1 :] if frozen else sizes
        start = merge_from([n for _, n, _ in sizes])
        if len(sizes) <= MERGE_AFTER or start >= len(sizes):
            return
        merged = [segment for segment, _, _ in sizes[start:]]
        keys, rows = [], []
        for segment in merged:  # oldest first: a later segment's vector wins
            blobs = self._db.execute(
                "SELECT keys, vectors FROM segments WHERE id = ?", (segment,)
            ).fetchone()
            keys.append(np.frombuffer(blobs[0], dtype=KEY))
            if len(blobs[1]) != len(keys[-1]) * dim * _F4.itemsize:
                raise self._corrupt(segment, f"{len(blobs[1])} bytes of vectors")
            rows.append(np.frombuffer(blobs[1], dtype=_F4).reshape(len(keys[-1]), dim))
        self._insert(*sorted_unique(np.concatenate(keys), np.concatenate(rows)))
        marks = ",".join("?" * len(merged))
        self._db.execute(f"DELETE FROM segments WHERE id IN ({marks})", merged)

    def close(self) -> None:
        with self._read_lock, self._write_lock:
            self._reader.close()
            self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def given_or_default(cache: EmbeddingCache | None) -> Iterator[EmbeddingCache]:
    """`cache`, or the default cache (`default_cache_dir`), closed on leaving."""
    if cache is not None:
        yield cache
        return
    with EmbeddingCache() as own:
        yield own
