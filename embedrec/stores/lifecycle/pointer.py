"""Aliases of path-based stores (`faiss:`, `qdrant+edge:`): a pointer file in the alias's
directory, the generations in subdirectories beside it.

    PATH/alias.json    {"format": 1, "live": "g0002", "previous": ["g0001", "g0000"]}
    PATH/g0001/        a whole store (a FAISS directory, an edge shard)
    PATH/g0002/

The pointer is replaced whole (written to a temp file, fsynced, `os.replace`d, the directory
fsynced), so a reader sees the old pointer or the new one, never a mix, and a crash at any
point leaves one of them. Changes to it run under `alias.lock` (flock), so a swap, a rollback
and a drop never lose each other's update. A damaged pointer is a `CorruptStore` naming the
file: opening never falls back to another generation by itself.

    PATH/rebuild.lock        the rebuild lease (leases/file.py): held for a whole rebuild
    PATH/generations.json    {"format": 1, "last": "g0002"}: the last name handed out

A plain store already at PATH is adopted as `g0000` (`adopt`): its files are copied into
`g0000/` (hard links for FAISS, whose files are never written in place), the pointer is
written, and only then are the originals removed, so that every step leaves a whole store
that opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrec.stores.errors import ConfigError, CorruptStore, StoreLocked, StoreNotFound
from embedrec.stores.lifecycle import generations
from embedrec.stores.lifecycle.file_lease import FileLease, reserve, running
from embedrec.stores.lifecycle.generations import ADOPTED, NAME, AliasState, Fingerprint, Generation
from embedrec.stores.lifecycle.leases import Holder, Lease, held
from embedrec.stores.small_files import ABSENT, locked, read_json, try_lock, write_json
from embedrec.stores.uri import StoreURI, parse_uri

POINTER = "alias.json"
POINTER_LOCK = "alias.lock"
REBUILD_LOCK = "rebuild.lock"
COUNTER = "generations.json"
FORMAT = 1
MARKERS = {"faiss": "manifest.json", "qdrant+edge": "embedrec.json"}
"""The file whose presence makes a directory a store of that scheme (its commit point)."""
FAISS_LOCK = "LOCK"
KEPT = {POINTER, POINTER_LOCK, REBUILD_LOCK, COUNTER, FAISS_LOCK}


@dataclass(frozen=True)
class Pointer:
    live: str
    previous: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "live": self.live, "previous": list(self.previous)}


def read_pointer(path: Path) -> Pointer | None:
    """The pointer in `path`, None when there is none; `CorruptStore` naming the file for
    anything unreadable or of the wrong shape."""
    where = path / POINTER
    raw = read_json(where)
    if raw is ABSENT:
        return None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CorruptStore(f"{where}: not an alias pointer of format {FORMAT}: {raw!r:.200}")
    live, previous = raw.get("live"), raw.get("previous")
    if not isinstance(live, str) or not NAME.fullmatch(live):
        raise CorruptStore(f"{where}: live {live!r} is not a generation name")
    if not isinstance(previous, list) or not all(
        isinstance(p, str) and NAME.fullmatch(p) and p != live for p in previous
    ):
        raise CorruptStore(f"{where}: previous {previous!r} is not a list of generation names")
    return Pointer(live, tuple(previous))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pointer(path: Path, pointer: Pointer, step: str = "swap") -> None:
    """Replace the pointer atomically and durably (`step` names the failure points)."""
    write_json(
        path / POINTER, pointer.to_json(), lambda: generations.reached(f"{step}:before-replace")
    )
    generations.reached(f"{step}:after-replace")


def generation_uri(raw: str, name: str) -> str:
    """`faiss:./movies?index=HNSW32` -> `faiss:./movies/g0003?index=HNSW32`."""
    scheme, rest = raw.split(":", 1)
    location, sep, query = rest.partition("?")
    return f"{scheme}:{location.rstrip('/')}/{name}{sep}{query}"


def resolve(uri: StoreURI) -> str | None:
    """The live generation's URI when `uri` names an alias directory, else None."""
    if uri.scheme not in MARKERS or not uri.location:
        return None
    path = Path(uri.location).expanduser()
    pointer = read_pointer(path)
    if pointer is None:
        return None
    _check_holds(path, pointer.live, uri.scheme, "live")
    return generation_uri(uri.raw, pointer.live)


def alias_of(uri: str) -> tuple[str, str] | None:
    """(the alias URI, the generation's name) when `uri` names a generation of a path-based
    alias (`faiss:P/g0003?q` -> (`faiss:P?q`, "g0003"), P holding a pointer); else None."""
    scheme, _, rest = uri.partition(":")
    location, sep, query = rest.partition("?")
    folder = Path(location.rstrip("/"))
    if scheme not in MARKERS or not NAME.fullmatch(folder.name):
        return None
    if not (folder.parent.expanduser() / POINTER).exists():
        return None
    return f"{scheme}:{folder.parent}{sep}{query}", folder.name


def _check_holds(path: Path, name: str, scheme: str, role: str) -> None:
    if not (path / name / MARKERS[scheme]).exists():
        raise CorruptStore(
            f"{path / POINTER} names {role} generation {name}, but {path / name} holds no "
            f"{scheme} store"
        )


class PathBook:
    """The alias book of one path-based alias (see the module doc)."""

    def __init__(self, uri: str) -> None:
        parsed = parse_uri(uri)
        if parsed.scheme not in MARKERS or not parsed.location:
            raise ConfigError(f"{parsed.raw}: an alias needs a directory (faiss:PATH)")
        self.raw = parsed.raw
        self.scheme = parsed.scheme
        self.path = Path(parsed.location).expanduser()
        self.marker = MARKERS[parsed.scheme]

    # -- reading --------------------------------------------------------------------------

    def generation(self, name: str) -> Generation:
        return Generation(generations.check_name(name), generation_uri(self.raw, name))

    def _on_disk(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return [p.name for p in self.path.iterdir() if NAME.fullmatch(p.name) and p.is_dir()]

    def state(self) -> AliasState:
        pointer = read_pointer(self.path)
        if pointer is not None:
            _check_holds(self.path, pointer.live, self.scheme, "live")
        live, previous = (pointer.live, pointer.previous) if pointer else (None, ())
        return generations.alias_state(self.raw, self.generation, live, previous, self._on_disk())

    def live_token(self) -> str | None:
        pointer = read_pointer(self.path)
        return pointer.live if pointer else None

    def new_generation(self) -> Generation:
        self.path.mkdir(parents=True, exist_ok=True)
        pointer = read_pointer(self.path)
        taken = [*self._on_disk(), *((pointer.live, *pointer.previous) if pointer else ())]
        return self.generation(reserve(self.path / COUNTER, self.path / POINTER_LOCK, taken))

    # -- the rebuild lease ----------------------------------------------------------------

    def rebuild_lease(
        self, *, wait: bool = False, say: Callable[[str], None] = lambda text: None
    ) -> contextlib.AbstractContextManager[Lease]:
        def claim(me: Holder) -> tuple[Lease | None, Holder | None]:
            return FileLease.claim(self.path / REBUILD_LOCK, me)

        return held(claim, self.raw, wait=wait, say=say)

    def running(self) -> Holder | None:
        return running(self.path / REBUILD_LOCK)

    def fingerprint(self, generation: Generation) -> Fingerprint:
        """The count, and the sha256 of the generation's marker: a FAISS manifest names each
        file with its checksum, so it pins the whole store; an edge shard's names its config."""
        # the registry imports this module: open_existing only at call time
        from embedrec.stores import open_existing

        marker = self.path / generations.check_name(generation.name) / self.marker
        try:
            digest = hashlib.sha256(marker.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise StoreNotFound(f"{marker.parent} holds no {self.scheme} store") from None
        with open_existing(generation.uri) as store:
            count = store.count()
        return Fingerprint(generation.name, count, digest)

    # -- changing the pointer -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Pointer | None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with locked(self.path / POINTER_LOCK):
            yield read_pointer(self.path)

    def swap(self, generation: Generation, expect: Fingerprint | None = None) -> AliasState:
        name = generations.check_name(generation.name)
        with self._locked() as pointer:
            if not (self.path / name / self.marker).exists():
                raise StoreNotFound(f"{self.path / name} holds no {self.scheme} store to swap in")
            if expect is not None:
                generations.check_fingerprint(self.fingerprint(generation), expect, self.raw)
            if pointer is not None:
                _check_holds(self.path, pointer.live, self.scheme, "live")
                if pointer.live == name:
                    return self.state()
            previous = (pointer.live, *pointer.previous) if pointer else ()
            write_pointer(self.path, Pointer(name, tuple(p for p in previous if p != name)))
        return self.state()

    def rollback(self) -> AliasState:
        with self._locked() as pointer:
            if pointer is None or not pointer.previous:
                raise ConfigError(f"{self.raw} has no previous generation to roll back to")
            target = pointer.previous[0]
            _check_holds(self.path, target, self.scheme, "previous")
            write_pointer(self.path, Pointer(target, pointer.previous[1:]))
        return self.state()

    def drop(self, generation: Generation) -> None:
        name = generations.check_name(generation.name)
        with self._locked() as pointer:
            if pointer is not None and pointer.live == name:
                raise ConfigError(f"{self.raw}: {name} is live; swap or roll back before dropping")
            if not (self.path / name).is_dir():
                raise StoreNotFound(f"{self.raw} has no generation {name}")
            self._check_unwritten(name)
            if pointer is not None and name in pointer.previous:
                kept = tuple(p for p in pointer.previous if p != name)
                write_pointer(self.path, Pointer(pointer.live, kept))
            shutil.rmtree(self.path / name)

    def _check_unwritten(self, name: str) -> None:
        """`StoreLocked` when a running rebuild builds generation `name`, or (FAISS) a
        writer holds its `LOCK`: only a generation no one writes may go."""
        holder = self.running()
        if holder is not None and holder.generation == name:
            raise StoreLocked(f"{self.raw}: {name} is being built by {holder.describe()}")
        if self.scheme == "faiss" and (self.path / name / FAISS_LOCK).exists():
            handle = try_lock(self.path / name / FAISS_LOCK)
            if handle is None:
                raise StoreLocked(f"{self.path / name} is being written by another process")
            handle.close()

    # -- adopting a plain store -----------------------------------------------------------

    def adopt(self) -> Generation | None:
        with self._locked() as pointer:
            if pointer is not None:
                if pointer.live == ADOPTED or ADOPTED in pointer.previous:
                    self._remove_plain()  # finish an adoption cut short after its pointer
                return None
            if not (self.path / self.marker).exists():
                return None
            with self._plain_held():
                self._copy_plain(self.path / f".{ADOPTED}.tmp")
                generations.reached("adopt:copied")
                write_pointer(self.path, Pointer(ADOPTED), "adopt")
                self._remove_plain()
        return self.generation(ADOPTED)

    @contextlib.contextmanager
    def _plain_held(self) -> Iterator[None]:
        """No one writes the plain store while it is copied: FAISS writers hold `LOCK`; an
        edge shard is held by its one opener, so opening it proves no one else has it."""
        if self.scheme == "faiss":
            handle = try_lock(self.path / FAISS_LOCK)
            if handle is None:
                raise StoreLocked(f"{self.path} is being written by another process")
            with handle:
                yield
            return
        # the registry imports this module: open_store only at call time
        from embedrec.stores import open_existing

        open_existing(self.raw).close()
        yield

    def _copy_plain(self, tmp: Path) -> None:
        """The plain store's committed files into `tmp`, then renamed to `g0000`."""
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        names = self._plain_files()
        for name in names:  # the marker (the store's commit point) last
            src, dst = self.path / name, tmp / name
            if self.scheme == "faiss":
                os.link(src, dst)
            elif src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        _fsync_dir(tmp)
        shutil.rmtree(self.path / ADOPTED, ignore_errors=True)  # a copy cut short before
        os.replace(tmp, self.path / ADOPTED)
        _fsync_dir(self.path)

    def _plain_files(self) -> list[str]:
        """What makes up the plain store: for FAISS the files its manifest lists, for an
        edge shard everything but the alias's own entries; the marker last."""
        if self.scheme == "faiss":
            # here: faiss loads only for FAISS aliases, not for edge ones
            from embedrec.stores.faiss.persistence import read_manifest

            manifest = read_manifest(self.path)
            if manifest is None:
                raise CorruptStore(f"{self.path / self.marker} is gone")
            return [*(entry["file"] for entry in manifest.files.values()), self.marker]
        names = [
            p.name
            for p in self.path.iterdir()
            if p.name not in KEPT
            and p.name != self.marker
            and not NAME.fullmatch(p.name)
            and not p.name.startswith(".")
        ]
        return [*sorted(names), self.marker]

    def _remove_plain(self) -> None:
        """Remove what is left of the adopted plain store at the top of the directory, its
        marker first so that it never looks like a store with missing files."""
        (self.path / self.marker).unlink(missing_ok=True)
        for entry in self.path.iterdir():
            if entry.name in KEPT or NAME.fullmatch(entry.name) or entry.name.startswith("."):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
