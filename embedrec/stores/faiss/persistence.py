"""A FAISS store on disk: generations of files named by a manifest.

`manifest.json` names the generation's files (`index.G.faiss`, `ids.G.json`,
`metadata.G.jsonl`) with their sizes and sha256. A save writes every file to a temp name,
fsyncs and renames it, the manifest last: the manifest's rename is the commit, so a crash or
a full disk leaves the previous generation intact. A reader that finds a file gone or changed
re-reads the manifest and, when a writer has committed a newer generation meanwhile, reads
that one instead.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import faiss

from embedrec.common.files import file_sha256
from embedrec.stores.base import METRICS, FrozenMetadata
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    StoreError,
    StoreLocked,
    StoreWriteError,
)
from embedrec.stores.faiss.kinds import IndexSpec, index_mismatch
from embedrec.stores.info import StoreInfo
from embedrec.stores.small_files import ABSENT, read_json, try_lock

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = "LOCK"
FILE_KEYS = ("index", "ids", "metadata")
LOAD_ATTEMPTS = 8
"""Generations a reader follows while writers keep committing newer ones under it."""
_GENERATION_FILE = re.compile(r"(index|ids|metadata)\.\d+\.\w+")
_TEMP_FILE = re.compile(r"\..+\.tmp")
_ALIAS_ENTRY = re.compile(r"alias\.lock|rebuild\.lock|generations\.json|g\d{4,9}")
"""What an alias keeps in its folder besides a pointer (stores/lifecycle/pointer.py): with no
pointer nothing is live there (a first rebuild failed), and a plain store may be made beside
them; the next rebuild adopts it and removes the failed generation."""


@dataclass(frozen=True)
class Manifest:
    dim: int
    metric: str
    spec: IndexSpec
    built: bool
    generation: int
    slots: int
    files: dict[str, dict[str, Any]]
    info: dict[str, Any] | None = None
    """The store's description (`StoreInfo.to_json`), committed with the generation."""


@dataclass
class Saved:
    """One generation as read from disk."""

    manifest: Manifest
    index: faiss.Index
    ids: list[str | None]
    meta: list[FrozenMetadata | None]


def _field(raw: dict, key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CorruptStore(f"{where}: {key!r} is {value!r}, not {getattr(kind, '__name__', kind)}")
    if kind is int and value < 0:
        raise CorruptStore(f"{where}: {key!r} is negative ({value})")
    return value


def _files(raw: dict, where: Path) -> dict[str, dict[str, Any]]:
    files = _field(raw, "files", dict, where)
    out = {}
    for key in FILE_KEYS:
        entry = files.get(key)
        if not isinstance(entry, dict):
            raise CorruptStore(f"{where}: the {key} file entry is {entry!r}")
        name = _field(entry, "file", str, where)
        if not _GENERATION_FILE.fullmatch(name):
            raise CorruptStore(f"{where}: {name!r} is not a file of this store")
        out[key] = {
            "file": name,
            "bytes": _field(entry, "bytes", int, where),
            "sha256": _field(entry, "sha256", str, where),
        }
    return out


def read_manifest(path: Path) -> Manifest | None:
    """The committed generation's manifest, None when there is none; `CorruptStore` for
    anything unreadable or of the wrong shape."""
    where = path / MANIFEST
    raw = read_json(where)
    if raw is ABSENT:
        return None
    if not isinstance(raw, dict):
        raise CorruptStore(f"{where} is unreadable: a {type(raw).__name__}, not an object")
    if raw.get("format") != FORMAT_VERSION:
        raise CorruptStore(
            f"{path}: format {raw.get('format')!r}, this embedrec reads {FORMAT_VERSION}"
        )
    metric = raw.get("metric")
    if metric not in METRICS:
        raise CorruptStore(f"{where}: unknown metric {metric!r}")
    dim = _field(raw, "dim", int, where)
    if dim == 0:
        raise CorruptStore(f"{where}: dim is 0")
    try:
        spec = IndexSpec.parse(raw.get("index"))  # type: ignore[arg-type]
        spec.check_dim(dim)
    except ConfigError as exc:
        raise CorruptStore(f"{where}: {exc}") from None
    return Manifest(
        dim=dim,
        metric=metric,
        spec=spec,
        built=_field(raw, "built", bool, where),
        generation=_field(raw, "generation", int, where),
        slots=_field(raw, "slots", int, where),
        files=_files(raw, where),
        info=None
        if raw.get("info") is None
        else StoreInfo.from_json(raw["info"], str(where)).to_json(),
    )


def lock_for_writing(path: Path, generation: int) -> TextIO:
    """Take the directory's writer lock (held while the returned file stays open), provided
    that `generation` is still the committed one: saving a handle's state over a newer
    generation would undo another writer's work. Readers never lock."""
    path.mkdir(parents=True, exist_ok=True)
    handle = try_lock(path / LOCK)
    if handle is None:
        raise StoreLocked(f"{path} is being written by another process")
    try:
        manifest = read_manifest(path)
    except StoreError:
        handle.close()
        raise
    if (manifest.generation if manifest else 0) != generation:
        handle.close()
        raise StoreLocked(
            f"{path} was written by another process after this handle opened it; "
            "reopen the store to write"
        )
    return handle


def holds_no_store(path: Path) -> bool:
    """True when `path` is absent, empty, or holds only what a store that never committed
    leaves (its lock file, temp files, uncommitted generation files) and what an alias with
    nothing live keeps (`_ALIAS_ENTRY`)."""
    if not path.exists():
        return True
    return all(
        p.name == LOCK
        or _TEMP_FILE.fullmatch(p.name)
        or _GENERATION_FILE.fullmatch(p.name)
        or _ALIAS_ENTRY.fullmatch(p.name)
        for p in path.iterdir()
    )


def load(path: Path) -> Saved:
    """The committed generation, following newer ones that writers commit meanwhile."""
    for _ in range(LOAD_ATTEMPTS):
        manifest = read_manifest(path)
        if manifest is None:
            raise CorruptStore(f"{path / MANIFEST} is missing")
        try:
            return _read_generation(path, manifest)
        except (CorruptStore, FileNotFoundError) as exc:
            latest = read_manifest(path)
            if latest is None or latest.generation == manifest.generation:
                if isinstance(exc, FileNotFoundError):
                    raise CorruptStore(
                        f"{exc.filename} is missing (listed in {MANIFEST})"
                    ) from None
                raise
    raise StoreError(f"{path}: writers replaced the store {LOAD_ATTEMPTS} times while reading it")


def _json_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _read_generation(path: Path, manifest: Manifest) -> Saved:
    for entry in manifest.files.values():
        file = path / entry["file"]
        if file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]:
            raise CorruptStore(f"{file} is truncated or corrupted (checksum mismatch)")
    names = {key: path / entry["file"] for key, entry in manifest.files.items()}
    try:
        index = faiss.read_index(str(names["index"]))
        ids = json.loads(names["ids"].read_text(encoding="utf-8"))
        lines = _json_lines(names["metadata"])
    except (RuntimeError, ValueError) as exc:
        raise CorruptStore(f"{path}: cannot read the store files: {exc}") from None
    m = manifest
    mismatch = index_mismatch(m.spec, m.built, m.dim, m.metric, index)
    if mismatch is not None:
        raise CorruptStore(f"{names['index']}: {mismatch}")
    if not isinstance(ids, list) or not (index.ntotal == len(ids) == len(lines) == manifest.slots):
        raise CorruptStore(
            f"{path}: index ({index.ntotal}), ids ({len(ids)}) and metadata ({len(lines)}) disagree"
        )
    return Saved(manifest, index, ids, _checked_rows(path, ids, lines))


def _checked_rows(path: Path, ids: list, lines: list) -> list[FrozenMetadata | None]:
    meta: list[FrozenMetadata | None] = []
    seen: set[str] = set()
    for n, (rid, line) in enumerate(zip(ids, lines, strict=True)):
        live = isinstance(rid, str) and rid not in seen and isinstance(line, dict)
        if not live and not (rid is None and line is None):
            raise CorruptStore(f"{path}: slot {n} holds id {rid!r} with metadata {line!r}")
        if live:
            seen.add(rid)
        meta.append(FrozenMetadata(line) if live else None)
    return meta


def fsync_rename(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(final)


def _write_files(tmp: dict[str, Path], index: faiss.Index, ids: list, meta: list) -> None:
    faiss.write_index(index, str(tmp["index"]))
    tmp["ids"].write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    with tmp["metadata"].open("w", encoding="utf-8") as fh:
        for row in meta:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")


def save(
    path: Path, generation: int, index: faiss.Index, ids: list, meta: list, header: dict
) -> None:
    """Write and commit `generation`. On any failure (a full disk, an unwritable file) the
    files it wrote are removed, the previous generation stays committed, and
    `StoreWriteError` says why."""
    files = {
        key: f"{key}.{generation}.{ext}"
        for key, ext in zip(FILE_KEYS, ("faiss", "json", "jsonl"), strict=True)
    }
    tmp = {key: path / f".{name}.tmp" for key, name in files.items()}
    tmp_manifest = path / f".{MANIFEST}.tmp"
    try:
        _write_files(tmp, index, ids, meta)
        listing = {}
        for key, name in files.items():
            fsync_rename(tmp[key], path / name)
            listing[key] = {
                "file": name,
                "bytes": (path / name).stat().st_size,
                "sha256": file_sha256(path / name),
            }
        manifest = {"format": FORMAT_VERSION, **header, "generation": generation, "files": listing}
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        fsync_rename(tmp_manifest, path / MANIFEST)
    except (OSError, RuntimeError, UnicodeError, ValueError) as exc:
        for leftover in [*tmp.values(), tmp_manifest, *(path / f for f in files.values())]:
            leftover.unlink(missing_ok=True)
        raise StoreWriteError(
            f"{path}: saving generation {generation} failed ({exc}); the previous generation "
            "is intact and the store's changes are still in memory: free space and flush again"
        ) from exc


def settle(path: Path, generation: int) -> None:
    """After a commit: make the renames durable and drop older generations' files."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in path.iterdir():
        if _GENERATION_FILE.fullmatch(old.name) and old.name.split(".")[1] != str(generation):
            old.unlink(missing_ok=True)
