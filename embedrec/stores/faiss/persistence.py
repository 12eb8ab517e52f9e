"""A FAISS store on disk: generations of files named by a manifest.

`manifest.json` names the generation's files (`index.G.faiss`; `ids.G.cols`: the ids by
slot, packed as UTF-8 bytes and offsets, a dead slot's id empty; `metadata.G.cols`: the
metadata columns; both in `columns_file`'s format) with their sizes and CRC-32s. A
save writes every file to a temp name, fsyncs and renames it, the manifest last: the
manifest's rename is the commit, so a crash or a full disk leaves the previous generation
intact. A reader holds a shared flock on its generation's index file while it reads the
generation, and a writer removes an older generation's files only under that file's
exclusive flock (`settle`), so no reader loses a file it is reading, however fast writers
commit. A reader that finds its generation gone before it locked it re-reads the manifest
and reads the newer one.

Older formats are still read, and the next save writes format 3. Format 2 kept the ids as a
JSON list (`ids.G.json`, null for a dead slot), which a reopen parsed into a Python string
per record (about 230 bytes each in memory, with the object array hits read from). Format 1
(before the columns) kept the metadata as JSON lines too, one record's dict a line
(`metadata.G.jsonl`, null for a dead slot), and a sha256 per file. The CRC-32 guards
against damage (a torn or bit-flipped file) as the sha256 did, at under half its cost:
reopening a 1M x 64 store spent as long hashing its files as FAISS took to read the index.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import faiss
import numpy as np

from embedrec.common.files import file_sha256
from embedrec.stores.base import METRICS
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    StoreError,
    StoreLocked,
    StoreWriteError,
)
from embedrec.stores.faiss.columns import MetaColumns
from embedrec.stores.faiss.columns_file import (
    columns_arrays,
    read_arrays,
    saved_columns,
    write_arrays,
)
from embedrec.stores.faiss.kinds import IndexSpec, index_mismatch
from embedrec.stores.faiss.packed import PackedIds
from embedrec.stores.info import StoreInfo
from embedrec.stores.small_files import ABSENT, read_json, try_lock

FORMAT_VERSION = 3
READS = (1, 2, 3)
"""The formats this embedrec reads (see the module's docstring)."""
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
    ids: PackedIds
    columns: MetaColumns


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
        check = "crc32" if "crc32" in entry else "sha256"
        out[key] = {
            "file": name,
            "bytes": _field(entry, "bytes", int, where),
            check: _field(entry, check, str, where),
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
    if raw.get("format") not in READS:
        raise CorruptStore(
            f"{path}: format {raw.get('format')!r}, this embedrec reads "
            f"{' and '.join(map(str, READS))}"
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
            with _reading(path / manifest.files["index"]["file"]):
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


@contextlib.contextmanager
def _reading(index: Path) -> Iterator[None]:
    """A shared flock on a generation's index file for the block, which `settle` does not
    remove files under; FileNotFoundError when a writer removed it before it was locked."""
    with index.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        if not os.path.samestat(os.fstat(handle.fileno()), index.stat()):
            raise FileNotFoundError(errno.ENOENT, "replaced while being opened", str(index))
        yield


def _damaged(path: Path, manifest: Manifest) -> Path | None:
    """The first file whose checksum disagrees with the manifest, None when all agree."""
    for entry in manifest.files.values():
        if not _checksum_holds(path / entry["file"], entry):
            return path / entry["file"]
    return None


def _read_generation(path: Path, manifest: Manifest) -> Saved:
    """The generation's files, checked against the manifest. The checksums run in a thread
    while FAISS reads the index (both release the GIL), so a reopen costs about the longer
    of the two rather than their sum; a checksum that disagrees wins over any read error."""
    names = {key: path / entry["file"] for key, entry in manifest.files.items()}
    for key, entry in manifest.files.items():
        if names[key].stat().st_size != entry["bytes"]:
            raise CorruptStore(f"{names[key]} is truncated or corrupted (checksum mismatch)")
    failed: Exception | None = None
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(_damaged, path, manifest)
        try:
            index = faiss.read_index(str(names["index"]))
            ids = _read_ids(names["ids"])
        except (RuntimeError, ValueError, CorruptStore) as exc:
            failed = exc
        damaged = checked.result()
    if damaged is not None:
        raise CorruptStore(f"{damaged} is truncated or corrupted (checksum mismatch)")
    if failed is not None:
        raise CorruptStore(f"{path}: cannot read the store files: {failed}") from None
    m = manifest
    mismatch = index_mismatch(m.spec, m.built, m.dim, m.metric, index)
    if mismatch is not None:
        raise CorruptStore(f"{names['index']}: {mismatch}")
    if not isinstance(ids, (list, PackedIds)) or not (index.ntotal == len(ids) == manifest.slots):
        raise CorruptStore(
            f"{path}: index ({index.ntotal}), ids ({len(ids)}) and manifest "
            f"({manifest.slots}) disagree"
        )
    if names["metadata"].suffix == ".jsonl":
        columns = _json_lines(path, names["metadata"], ids)
    else:
        columns = saved_columns(names["metadata"], manifest.slots)
    if isinstance(ids, list):  # formats 1 and 2
        _check_ids(path, ids)
        ids = PackedIds.of(ids)
    return Saved(manifest, index, ids, columns)


def _read_ids(file: Path) -> list | PackedIds:
    """Format 3's packed ids (checked: offsets in order within the bytes, each id starting
    on a character), or the JSON list of formats 1 and 2."""
    if file.suffix == ".json":
        return json.loads(file.read_text(encoding="utf-8"))
    header, arrays = read_arrays(file)
    data, offsets = arrays.get("data"), arrays.get("offsets")
    if data is None or offsets is None or data.dtype != "|u1" or offsets.dtype != "<i8":
        raise CorruptStore(f"{file}: not a file of packed ids")
    if header.get("slots") != offsets.size - 1:
        raise CorruptStore(f"{file}: {offsets.size - 1} id offsets for {header.get('slots')!r}")
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != data.size:
        raise CorruptStore(f"{file}: id offsets disagree with the id bytes")
    starts = offsets[:-1][np.diff(offsets) < 0]
    if starts.size:
        raise CorruptStore(f"{file}: id offsets go backwards")
    heads = data[offsets[:-1][offsets[:-1] < data.size]]
    if ((heads & 0xC0) == 0x80).any():  # a UTF-8 continuation byte
        raise CorruptStore(f"{file}: an id starts inside a character")
    return PackedIds(data, offsets)


def file_crc32(path: Path) -> str:
    """The CRC-32 of a file's bytes as 8 hex digits, read in 8 MiB chunks into one buffer
    (a memory map would count the whole file in the process's resident memory)."""
    crc, buffer = 0, bytearray(8 << 20)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            crc = zlib.crc32(view[:size], crc)
    return f"{crc:08x}"


def _checksum_holds(file: Path, entry: dict[str, Any]) -> bool:
    if "crc32" in entry:
        return file_crc32(file) == entry["crc32"]
    return file_sha256(file) == entry["sha256"]  # format 1


def _check_ids(path: Path, ids: list) -> None:
    """Each id a string, or None for a dead slot (ids twice: `SlotTable.index`)."""
    if not set(map(type, ids)) <= {str, type(None)} or "" in ids:
        n, rid = next((n, i) for n, i in enumerate(ids) if not isinstance(i, str | None) or i == "")
        raise CorruptStore(f"{path}: slot {n} holds id {rid!r}")


def _json_lines(path: Path, file: Path, ids: list) -> MetaColumns:
    """Format 1's metadata: a JSON object per slot, null where the slot is dead."""
    try:
        lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    except ValueError as exc:
        raise CorruptStore(f"{path}: cannot read the store files: {exc}") from None
    if len(lines) != len(ids):
        raise CorruptStore(f"{path}: ids ({len(ids)}) and metadata ({len(lines)}) disagree")
    seen: set[str] = set()
    for n, (rid, line) in enumerate(zip(ids, lines, strict=True)):
        live = isinstance(rid, str) and rid not in seen and isinstance(line, dict)
        if not live and not (rid is None and line is None):
            raise CorruptStore(f"{path}: slot {n} holds id {rid!r} with metadata {line!r}")
        if live:
            seen.add(rid)
    try:
        return MetaColumns.of_rows(lines)
    except ValueError as exc:
        raise CorruptStore(f"{path}: {exc}") from None


def fsync_rename(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(final)


def _write_files(
    tmp: dict[str, Path],
    index: faiss.Index,
    ids: tuple[np.ndarray, np.ndarray],
    columns: MetaColumns,
) -> dict[str, str]:
    """Write the generation's files to their temp names; their CRC-32s. FAISS writes the
    index (and it is summed) in a thread meanwhile: both release the GIL."""
    with ThreadPoolExecutor(1) as pool:
        index_crc = pool.submit(_written_index, index, tmp["index"])
        data, offsets = ids
        write_arrays(tmp["ids"], {"data": data, "offsets": offsets}, {"slots": offsets.size - 1})
        header, arrays = columns_arrays(columns)
        write_arrays(tmp["metadata"], arrays, header)
        crcs = {key: file_crc32(tmp[key]) for key in ("ids", "metadata")}
        return {"index": index_crc.result(), **crcs}


def _written_index(index: faiss.Index, file: Path) -> str:
    faiss.write_index(index, str(file))
    return file_crc32(file)


def save(
    path: Path,
    generation: int,
    index: faiss.Index,
    ids: tuple[np.ndarray, np.ndarray],
    columns: MetaColumns,
    header: dict,
) -> None:
    """Write and commit `generation` (`ids`: `PackedIds.saved`). On any failure (a full
    disk, an unwritable file) the files it wrote are removed, the previous generation stays
    committed, and `StoreWriteError` says why."""
    files = {
        key: f"{key}.{generation}.{ext}"
        for key, ext in zip(FILE_KEYS, ("faiss", "cols", "cols"), strict=True)
    }
    tmp = {key: path / f".{name}.tmp" for key, name in files.items()}
    tmp_manifest = path / f".{MANIFEST}.tmp"
    try:
        crcs = _write_files(tmp, index, ids, columns)
        listing = {}
        for key, name in files.items():
            fsync_rename(tmp[key], path / name)
            listing[key] = {"file": name, "bytes": (path / name).stat().st_size, "crc32": crcs[key]}
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
    older: dict[str, list[Path]] = {}
    for old in path.iterdir():
        if _GENERATION_FILE.fullmatch(old.name) and old.name.split(".")[1] != str(generation):
            older.setdefault(old.name.split(".")[1], []).append(old)
    for files in older.values():
        _remove_unread(files)


def _remove_unread(files: list[Path]) -> None:
    """Remove one older generation's files unless a reader holds its index file (`_reading`);
    then they stay for the next commit's `settle` to remove."""
    index = next((f for f in files if f.name.startswith("index.")), None)
    with contextlib.ExitStack() as held:
        if index is not None:
            try:
                handle = held.enter_context(index.open("rb"))
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            except FileNotFoundError:  # another writer's settle removed it meanwhile
                pass
        for file in files:
            file.unlink(missing_ok=True)
