"""How an ingest manifest (manifest.py) keeps its ids and content hashes in SQLite.

Each commit is one row of the `segments` table: its ids and their hashes, each list packed
into one blob (`pack` / `unpack`), so committing 25k entries costs a few SQLite calls rather
than one per entry, and binding no Python object per entry. The segments, applied oldest
first (a later hash wins), are the manifest; a reader unpacks them into one dict, then
keeps it current by loading only the segments written since (AUTOINCREMENT: ids are never
reused). A segment marked `base` holds the whole manifest as of its writing (written by
`remove`, `clear` and the migration of an old file), and the segments before it are deleted
in the same transaction: a reader that finds a new base starts over from it.

Past MERGE_AFTER segments, a commit merges the newest where they outgrow the one before
(`merge_from`, as the embedding cache's segments), inside its write transaction, so that a
file holds a bounded number of rows and a hash replaced since is dropped. A merged segment
holds what the segments it replaces held (the newest of each id), so a reader that had
applied those may apply it again and change nothing.

Manifests written by earlier versions hold a table `items` of one row per id; opening one
for writing moves its rows into a segment and drops the table, in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrec.embedders.keyed import merge_from

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " base INTEGER NOT NULL, n INTEGER NOT NULL, ids BLOB NOT NULL, hashes BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)",
)
MERGE_AFTER = 16
"""Segments are merged only once there are more: a reader's cost is per entry, not per
segment, so merging serves to bound the file's rows and drop replaced hashes."""
_HEX, _JOINED, _SIZED = b"x", b"j", b"s"
"""How `pack` wrote a list: digests (64 lowercase hex characters each) as 32 raw bytes; UTF-8
joined by NUL; UTF-8 after each string's length in characters (some string holds a NUL)."""
_LENGTH = np.dtype("<i8")

Entries = dict[str, str]
"""id -> hash, in the order ids first entered the manifest."""


class ManifestError(ValueError):
    """The manifest file is unreadable, or a value cannot be written to it."""


def pack(strings: Sequence[str], what: str) -> bytes:
    """`strings` as one blob (`unpack` reads it back); `what` names them in errors."""
    try:
        joined = " ".join(strings)
    except TypeError:
        bad = next(i for i, s in enumerate(strings) if not isinstance(s, str))
        kind = type(strings[bad]).__name__
        reason = f"{what} at position {bad} is {kind} {strings[bad]!r}, not str"
        raise ManifestError(reason) from None
    n = len(strings)
    if not n:
        return _JOINED
    if len(joined) == 65 * n - 1 and joined[64::65] == " " * (n - 1):
        digests = _digests(joined, n)
        if digests is not None:
            return _HEX + digests
    joined = "\0".join(strings)
    try:
        raw = joined.encode("utf-8")
    except UnicodeEncodeError:
        bad = next(s for s in strings if not _encodable(s))
        reason = f"{what} {bad!a} is not valid Unicode text (a lone surrogate)"
        raise ManifestError(reason) from None
    if joined.count("\0") == n - 1:
        return _JOINED + raw
    lengths = np.fromiter(map(len, strings), _LENGTH, n)
    return _SIZED + lengths.tobytes() + "".join(strings).encode("utf-8")


def _digests(joined: str, n: int) -> bytes | None:
    """The `n` digests that `joined` spells (64 characters each, a space between them) as
    raw bytes, if they are lowercase hex (so that `hex()` gives them back)."""
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    return raw if len(raw) == 32 * n and raw.hex(" ", 32) == joined else None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unpack(blob: bytes, n: int) -> list[str]:
    """The `n` strings `pack` wrote to `blob`."""
    if n == 0:
        return []
    view = memoryview(blob)
    tag, body = bytes(view[:1]), view[1:]
    if tag == _HEX and len(body) == 32 * n:
        return body.hex(" ", 32).split(" ")
    if tag == _JOINED:
        out = str(body, "utf-8").split("\0")
        if len(out) == n:
            return out
    if tag == _SIZED and len(body) >= 8 * n:
        ends = np.cumsum(np.frombuffer(body[: 8 * n], dtype=_LENGTH)).tolist()
        text = str(body[8 * n :], "utf-8")
        if ends[-1] == len(text):
            return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    raise ValueError(f"{n} strings packed as {tag!r} in {len(body)} bytes")


@dataclass
class Segments:
    """The segments of one manifest file through one connection (the caller's lock and
    transaction around each call)."""

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
            into.update(
                zip(self.unpacked(segment, ids, n), self.unpacked(segment, hashes, n), strict=True)
            )

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
        digests = [hashes[1:] for _, _, hashes in packed if hashes[:1] == _HEX]
        if len(digests) < len(packed) or len(set(ids)) < len(ids):
            merged: Entries = {}
            self.apply(segments, merged)
            return self.write(merged, base=base)
        return self.insert(pack(ids, "id"), _HEX + b"".join(digests), len(ids), base=base)

    def has_legacy(self) -> bool:
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'"
        return self.db.execute(old).fetchone() is not None

    def legacy(self) -> Entries:
        """The rows of an earlier version's `items` table, in the order they were written."""
        return dict(self.db.execute("SELECT id, hash FROM items ORDER BY rowid").fetchall())

    def migrate(self) -> None:
        """Move an earlier version's `items` rows into a segment (the newest: they were
        written by an earlier version after this file's segments, if it has any) and drop
        the table, in the caller's write transaction."""
        if self.has_legacy():
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
        has_segments = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'"
        if db.execute(has_segments).fetchone() is not None:
            store.apply(store.newer(0)[1], entries)
        if store.has_legacy():  # as `migrate` will order them
            entries.update(store.legacy())
        return info, entries
    except (sqlite3.Error, ManifestError):
        return None
    finally:
        db.close()
