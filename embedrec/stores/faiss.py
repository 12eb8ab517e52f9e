"""FAISS, the embedded default store: `faiss:PATH?index=HNSW32&metric=cosine`.

Index kinds (FAISS factory strings): `Flat` (exact), `HNSW{M}`, `IVF{n},Flat`, `IVF{n},PQ{m}`
(always with a flat refine stage, so fetch and re-ranking use the exact vectors) and `SQ8`.
`IVF,Flat` / `IVF,PQ{m}` leave nlist to be chosen from the data size at build time.

Records live at positions ("slots") 0..ntotal-1 of the FAISS index, in insertion order; the
id table and the metadata are lists aligned with the slots. A delete or an overwrite marks the
old slot dead (a tombstone that every search excludes through an IDSelector); dead slots are
reclaimed by `compact()`, which `flush()` runs by itself for the flat-code kinds (Flat, SQ8,
cheap) and for any kind once more than a quarter of the slots are dead.

Kinds that need training (IVF, PQ, SQ8) hold upserts in an exact flat index until `flush()`
has at least `min_train` vectors to train on; until then search is exact over that flat index.

Filters are evaluated over metadata columns into a bitmap that FAISS applies during the
search (never by post-filtering a short list). When few records match, scoring them all
exactly is cheaper than the ANN search (m^2 <= n * the vectors an ANN search scores); broader
filters use the ANN index with its effort (ef, nprobe) raised by 1/selectivity, and any query
that still comes back short is answered exactly, so k hits come back whenever k records match.

On disk: `manifest.json` names the generation's files (`index.G.faiss`, `ids.G.json`,
`metadata.G.jsonl`) with sizes and sha256; every file is written to a temp name, fsynced and
renamed, the manifest last, so a crash leaves the previous generation intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import re
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from embedrec.stores.base import (
    METRICS,
    Capabilities,
    FrozenMetadata,
    Hits,
    Record,
    VectorStore,
)
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    StoreError,
    StoreLocked,
    StoreNotFound,
)
from embedrec.stores.filters import Columns, Node
from embedrec.stores.uri import StoreURI

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_KIND = "Flat"
COMPACT_DEAD_FRACTION = 0.25
TRAIN_SAMPLE = 100_000
MASK_CACHE = 128
EXCLUDED_CACHE = 4096
SMALL_RESULT = 64
GATHER_BYTES = 64 << 20

_KIND_PATTERNS = {
    "flat": re.compile(r"Flat"),
    "hnsw": re.compile(r"HNSW(?P<m>\d*)(,Flat)?"),
    "ivf": re.compile(r"IVF(?P<nlist>\d*),Flat"),
    "ivfpq": re.compile(r"IVF(?P<nlist>\d*),PQ(?P<pq>\d+)(x(?P<bits>\d+))?(,RFlat)?"),
    "sq": re.compile(r"SQ8"),
}


@dataclass(frozen=True)
class IndexSpec:
    """A parsed index kind."""

    family: str
    hnsw_m: int = 32
    nlist: int | None = None
    pq_m: int = 0
    pq_bits: int = 8

    @classmethod
    def parse(cls, kind: str) -> IndexSpec:
        for family, pattern in _KIND_PATTERNS.items():
            match = pattern.fullmatch(kind.strip())
            if match is None:
                continue
            groups = match.groupdict()
            return cls(
                family=family,
                hnsw_m=int(groups.get("m") or 32),
                nlist=int(groups["nlist"]) if groups.get("nlist") else None,
                pq_m=int(groups.get("pq") or 0),
                pq_bits=int(groups.get("bits") or 8),
            )
        raise ConfigError(
            f"unknown FAISS index kind {kind!r}; use Flat, HNSW32, IVF1024,Flat, IVF,Flat, "
            "IVF1024,PQ16 or SQ8"
        )

    @property
    def name(self) -> str:
        nlist = str(self.nlist or "")
        bits = f"x{self.pq_bits}" if self.pq_bits != 8 else ""
        return {
            "flat": "Flat",
            "hnsw": f"HNSW{self.hnsw_m}",
            "ivf": f"IVF{nlist},Flat",
            "ivfpq": f"IVF{nlist},PQ{self.pq_m}{bits}",
            "sq": "SQ8",
        }[self.family]

    @property
    def trainable(self) -> bool:
        return self.family in ("ivf", "ivfpq", "sq")

    @property
    def min_train(self) -> int:
        """Fewest vectors worth training on; below it the store stays exact and flat."""
        return {"ivf": 39, "ivfpq": 4 * 2**self.pq_bits, "sq": 1}.get(self.family, 0)

    def nlist_for(self, n: int) -> int:
        return self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


class _RWLock:
    """Many concurrent searches, one writer at a time: `with lock.read():` / `lock.write()`.
    The read side is a plain context manager on a C lock, not a generator, and wakes writers
    only when one waits: it is on every search."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._waiting = 0

    def read(self) -> _RWLock:
        return self

    def __enter__(self) -> None:
        with self._mutex:
            while self._writing:
                self._cond.wait()
            self._readers += 1

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            self._readers -= 1
            if self._waiting and not self._readers:
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._mutex:
            self._waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._mutex:
                self._writing = False
                self._cond.notify_all()


def _bitmap(mask: np.ndarray) -> tuple[faiss.IDSelectorBitmap, np.ndarray]:
    """A FAISS selector over slots; the returned array must outlive the search."""
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)), bits


def _frozen(meta: object) -> FrozenMetadata | None:
    """A metadata line of a saved store: an object, or null for a dead slot."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise ValueError(f"a metadata line holds {type(meta).__name__}, not an object")
    return FrozenMetadata(meta)


def _metadata_of(
    snapshot: np.ndarray, slots: np.ndarray | list[int]
) -> list[FrozenMetadata | None]:
    return snapshot[slots].tolist()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_rename(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(final)


class FaissStore(VectorStore):
    def __init__(
        self,
        path: Path | None,
        *,
        dim: int,
        metric: str,
        spec: IndexSpec,
        ef: int = 64,
        ef_construction: int = 40,
        nprobe: int | None = None,
        k_factor: int = 4,
        uri: str = "",
    ) -> None:
        self.path = path
        self.dim = dim
        self.metric = metric  # type: ignore[assignment]
        self.spec = spec
        self.ef = ef
        self.ef_construction = ef_construction
        self.nprobe = nprobe
        self.k_factor = k_factor
        self.uri = uri or f"faiss:{path or ''}"
        self.capabilities = self._capabilities()
        self._unfiltered: dict[tuple, faiss.SearchParameters | None] = {}
        self._index: faiss.Index = self._empty_index(staging=spec.trainable)
        self._built = not spec.trainable
        self._ids: list[str | None] = []
        self._slot: dict[str, int] = {}
        self._meta: list[FrozenMetadata | None] = []
        self._columns: Columns | None = None
        self._masks: dict[str, np.ndarray] = {}
        self._excluded: dict[frozenset[str], np.ndarray] = {}
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._mask_lock = threading.Lock()
        self._dead = 0
        self._generation = 0
        self._dirty = False
        self._lock = _RWLock()
        self._lock_file: Any = None
        self._closed = False

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> FaissStore:
        path = Path(uri.location).expanduser() if uri.location else None
        kind = uri.pop("index")
        uri_metric = uri.pop("metric")
        if uri_metric is not None and uri_metric not in METRICS:
            raise ConfigError(f"{uri.raw}: unknown metric {uri_metric!r}; known: {METRICS}")
        if metric and uri_metric and metric != uri_metric:
            raise ConfigError(f"{uri.raw}: metric {metric!r} contradicts the URI's {uri_metric!r}")
        metric = metric or uri_metric
        tuning = {
            "ef": uri.pop_int("ef", 64),
            "ef_construction": uri.pop_int("efConstruction", 40),
            "nprobe": uri.pop_int("nprobe"),
            "k_factor": uri.pop_int("k_factor", 4),
        }
        nlist = uri.pop_int("nlist")
        uri.done()
        if path is not None and (path / MANIFEST).exists():
            store = cls._load(path, uri.raw, tuning)
            if dim is not None and dim != store.dim:
                raise DimensionError(f"{uri.raw} holds {store.dim}-d vectors, not {dim}-d")
            if metric is not None and metric != store.metric:
                raise ConfigError(f"{uri.raw} uses metric {store.metric!r}, not {metric!r}")
            if kind is not None and IndexSpec.parse(kind).family != store.spec.family:
                raise ConfigError(f"{uri.raw} is a {store.spec.name} index, not {kind}")
            return store
        if dim is None:
            raise StoreNotFound(f"{uri.raw}: no FAISS store there; pass dim to create one")
        if path is not None and path.exists() and any(path.iterdir()):
            raise ConfigError(f"{path} is not empty and holds no FAISS store ({MANIFEST} missing)")
        spec = IndexSpec.parse(kind or DEFAULT_KIND)
        if nlist is not None:
            spec = IndexSpec(spec.family, spec.hnsw_m, nlist, spec.pq_m, spec.pq_bits)
        if spec.family == "ivfpq" and dim % spec.pq_m:
            raise ConfigError(
                f"PQ{spec.pq_m} needs a dimension divisible by {spec.pq_m}, not {dim}"
            )
        return cls(path, dim=dim, metric=metric or "cosine", spec=spec, uri=uri.raw, **tuning)

    def _empty_index(self, *, staging: bool = False, nlist: int = 1) -> faiss.Index:
        metric = _faiss_metric(self.metric)
        if staging or self.spec.family == "flat":
            return faiss.IndexFlat(self.dim, metric)
        if self.spec.family == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, metric)
            index.hnsw.efConstruction = self.ef_construction
            return index
        if self.spec.family == "sq":
            return faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, metric)
        spec = IndexSpec(
            self.spec.family, nlist=nlist, pq_m=self.spec.pq_m, pq_bits=self.spec.pq_bits
        )
        if spec.family == "ivf":
            return faiss.index_factory(self.dim, spec.name, metric)
        # "np": no polysemous training, which search never uses and which is slow (8x here)
        factory = f"IVF{nlist},PQ{spec.pq_m}x{spec.pq_bits}np,RFlat"
        return faiss.index_factory(self.dim, factory, metric)

    def _capabilities(self) -> Capabilities:
        family = self.spec.family
        return Capabilities(
            exact=family == "flat",
            search_params={
                "hnsw": ("ef",),
                "ivf": ("nprobe",),
                "ivfpq": ("nprobe", "k_factor"),
            }.get(family, ()),
            max_batch=10_000,
            persistent=self.path is not None,
            deletes=family in ("flat", "sq"),
            exact_vectors=family != "sq",
        )

    @property
    def built(self) -> bool:
        """False while a trainable kind still serves exact search from its flat staging index."""
        return self._built

    # -- writes ---------------------------------------------------------------------------

    def _writable(self) -> None:
        """Take the writer's lock on the directory on first write: readers never lock."""
        if self._closed:
            raise StoreError(f"{self.uri} is closed")
        if self.path is None or self._lock_file is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = (self.path / "LOCK").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLocked(f"{self.path} is being written by another process") from None
        if self._disk_generation() != self._generation:
            handle.close()  # saving this handle's state would undo the other writer's work
            raise StoreLocked(
                f"{self.path} was written by another process after this handle opened it; "
                "reopen the store to write"
            )
        self._lock_file = handle

    def _disk_generation(self) -> int:
        assert self.path is not None
        try:
            return int(json.loads((self.path / MANIFEST).read_text())["generation"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStore(f"{self.path / MANIFEST} is unreadable: {exc}") from None

    def _kill(self, slots: list[int]) -> None:
        for slot in slots:
            del self._slot[self._ids[slot]]  # type: ignore[arg-type]
            self._ids[slot] = None
            self._meta[slot] = None
        self._dead += len(slots)

    def _upsert(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> int:
        with self._lock.write():
            self._writable()
            self._kill([self._slot[i] for i in ids if i in self._slot])
            start = len(self._ids)
            self._index.add(vectors)
            self._ids.extend(ids)
            self._meta.extend(map(FrozenMetadata, metadata))
            self._slot.update(zip(ids, range(start, start + len(ids)), strict=True))
            self._changed()
        return len(ids)

    def _delete_ids(self, ids: list[str]) -> int:
        with self._lock.write():
            slots = [self._slot[i] for i in ids if i in self._slot]
            if slots:
                self._writable()
                self._kill(slots)
                self._changed()
        return len(slots)

    def _delete_filter(self, node: Node) -> int:
        with self._lock.write():
            slots = np.flatnonzero(self._mask(node)).tolist()
            if slots:
                self._writable()
                self._kill(slots)
                self._changed()
        return len(slots)

    # -- reads ----------------------------------------------------------------------------

    def _changed(self) -> None:
        """After a write: metadata columns and filter masks are stale, the files unsaved."""
        self._columns = None
        self._arrays = None
        self._masks.clear()
        self._excluded.clear()
        self._dirty = True

    def _table(self) -> Columns:
        if self._columns is None:
            self._columns = Columns(self._meta)
        return self._columns

    def _mask(self, node: Node) -> np.ndarray:
        """The slots a filter selects, cached until the next write: serving traffic repeats
        its filters, and evaluating one costs more than a small search. Keyed by repr, in
        which True and 1 differ (they are equal, and hash alike, as Python values)."""
        key = repr(node)
        mask = self._masks.get(key)
        if mask is None:
            mask = self._table().evaluate(node)
            with self._mask_lock:  # concurrent searches share the cache
                if len(self._masks) >= MASK_CACHE:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = mask
        return mask

    def _slots_of(self, ids: Collection[str]) -> np.ndarray:
        """The live slots of `ids`. A frozenset's are cached until the next write: a serving
        process excludes the same seen-item sets again and again."""
        slots = self._excluded.get(ids) if isinstance(ids, frozenset) else None
        if slots is None:
            found = np.fromiter(map(self._slot.get, ids, itertools.repeat(-1)), np.int64)
            slots = found[found >= 0]
            if isinstance(ids, frozenset):
                with self._mask_lock:
                    if len(self._excluded) >= EXCLUDED_CACHE:
                        self._excluded.pop(next(iter(self._excluded)))
                    self._excluded[ids] = slots
        return slots

    def _fetch(self, ids: list[str]) -> list[Record]:
        with self._lock.read():
            found = [(i, self._slot[i]) for i in ids if i in self._slot]
            if not found:
                return []
            slots = np.fromiter((s for _, s in found), dtype=np.int64, count=len(found))
            vectors = self._index.reconstruct_batch(slots)
            return [
                Record(i, vectors[n], dict(self._meta[s] or {})) for n, (i, s) in enumerate(found)
            ]

    def _count(self, node: Node | None) -> int:
        with self._lock.read():
            if node is None:
                return len(self._slot)
            return int(self._mask(node).sum())

    def _params(
        self, sel: Any, ef: int, nprobe: int | None, k_factor: int
    ) -> faiss.SearchParameters | None:
        family = self.spec.family if self._built else "flat"
        if family == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
        if family in ("ivf", "ivfpq"):
            ivf = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe or self._default_nprobe())
            if family == "ivf":
                return ivf
            params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=ivf)
            params.ivf = ivf  # keep the Python wrapper alive as long as params
            return params
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def _nlist(self) -> int:
        return faiss.extract_index_ivf(self._index).nlist

    def _default_nprobe(self) -> int:
        nlist = self._nlist()
        return self.nprobe or min(nlist, max(8, nlist // 32))

    def _ann_work(self, ef: int, nprobe: int | None) -> float:
        """Roughly how many vectors one unfiltered ANN query scores."""
        if self.spec.family == "hnsw":
            return float(ef * self.spec.hnsw_m)
        nlist = self._nlist()
        return (nprobe or self._default_nprobe()) * len(self._ids) / nlist

    def _exact(
        self, queries: np.ndarray, k: int, mask: np.ndarray, matched: int
    ) -> tuple[np.ndarray, ...]:
        """Exact top-k over the `matched` slots in `mask`, from the index's exact vectors.

        FAISS scans a flat index through a selector one query and one slot at a time, without
        BLAS. Gathering the selected vectors and scoring them in one matrix product is faster
        for any batch (1,000 queries over 100k x 128: 4 ms instead of 196 at 1% selected, 0.26
        s instead of 2.7 at 90%) and for one query when at most a quarter of the slots are
        selected; the gathered copy is bounded by GATHER_BYTES."""
        family = self.spec.family if self._built else "flat"
        if family == "ivf":
            sel, _bits = _bitmap(mask)
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self._nlist())
            return self._index.search(queries, k, params=params)
        if family == "hnsw":
            flat = faiss.downcast_index(self._index.storage)
        elif family == "ivfpq":
            flat = faiss.downcast_index(self._index.refine_index)
        else:
            flat = self._index
        gather = family != "sq" and matched * self.dim * 4 <= GATHER_BYTES
        if gather and (len(queries) > 1 or 4 * matched <= len(mask)):
            slots = np.flatnonzero(mask)
            vectors = flat.reconstruct_batch(slots)
            distances, at = faiss.knn(queries, vectors, k, flat.metric_type)
            return distances, np.where(at >= 0, slots[at], -1)
        sel, _bits = _bitmap(mask)
        return flat.search(queries, k, params=faiss.SearchParameters(sel=sel))

    def _knobs(self, params: dict[str, Any]) -> tuple[int, int | None, int]:
        """ef, nprobe and k_factor for one call: its params, else the store's defaults."""
        if not params:
            return (self.ef, self.nprobe, self.k_factor)
        return (
            int(params.get("ef", self.ef)),
            params.get("nprobe", self.nprobe),
            int(params.get("k_factor", self.k_factor)),
        )

    def _search(
        self, queries: np.ndarray, k: int, node: Node | None, params: dict[str, Any]
    ) -> list[Hits]:
        with self._lock.read():
            knobs = self._knobs(params)
            mask = None
            if node is not None:
                mask = self._mask(node)
            elif self._dead:
                mask = self._table().live
            if mask is None:
                if knobs not in self._unfiltered:
                    self._unfiltered[knobs] = self._params(None, *knobs)
                distances, labels = self._index.search(queries, k, params=self._unfiltered[knobs])
            else:
                distances, labels = self._filtered(queries, k, mask, *knobs)
            return self._hits(distances, labels)

    def _search_excluding(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Excluded ids leave the search itself, through the same pre-filter mask as a
        filter: one search per row, at k, instead of over-fetching."""
        with self._lock.read():
            ef, nprobe, k_factor = self._knobs(params)
            base = self._mask(node) if node is not None else self._table().live
            out: list[Hits] = []
            for row, ex in zip(queries, exclude, strict=True):
                mask = base
                slots = self._slots_of(ex)
                if slots.size:
                    mask = base.copy()
                    mask[slots] = False
                distances, labels = self._filtered(row[None, :], k, mask, ef, nprobe, k_factor)
                out.extend(self._hits(distances, labels))
            return out

    def _filtered(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray,
        ef: int,
        nprobe: int | None,
        k_factor: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        matched = int(mask.sum())
        n = len(self._ids)
        if matched == 0:
            return (np.zeros((len(queries), 0), "f4"), np.full((len(queries), 0), -1, "i8"))
        family = self.spec.family if self._built else "flat"
        if family in ("flat", "sq") or matched**2 <= n * self._ann_work(ef, nprobe):
            return self._exact(queries, k, mask, matched)
        raise_by = n / matched
        ef_f = min(max(ef, math.ceil(ef * raise_by)), max(ef, 4096))
        nprobe_f = None
        if family in ("ivf", "ivfpq"):
            nprobe_f = min(self._nlist(), math.ceil((nprobe or self._default_nprobe()) * raise_by))
        sel, _bits = _bitmap(mask)
        distances, labels = self._index.search(
            queries, k, params=self._params(sel, ef_f, nprobe_f, k_factor)
        )
        short = np.flatnonzero((labels >= 0).sum(axis=1) < min(k, matched))
        if short.size:
            distances[short], labels[short] = self._exact(queries[short], k, mask, matched)
        return distances, labels

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and metadata as object arrays over slots, so that mapping a batch of labels is
        one fancy index in C rather than a Python lookup per hit. A snapshot: never changed
        once built (a write drops it, the next search builds another), so hits can read their
        metadata from it later and still see the search's moment."""
        if self._arrays is None:
            ids = np.empty(len(self._ids), dtype=object)
            ids[:] = self._ids
            meta = np.empty(len(self._meta), dtype=object)
            meta[:] = self._meta
            self._arrays = (ids, meta)
        return self._arrays

    def _hits(self, distances: np.ndarray, labels: np.ndarray) -> list[Hits]:
        """Each row's hits as columns, without a Python object per hit. FAISS pads a short
        row with label -1.

        The metadata is left to be read on first access from the snapshot `_lookup` keeps:
        touching each hit's metadata costs as much again as its id (cache misses, mostly),
        and many callers never read it. A batch also maps its labels to ids with one fancy
        index into that snapshot. A few hits are read from the lists directly, since numpy's
        per-call cost (2-4 us a call, on caches the search has just evicted) would dominate,
        and eagerly when no snapshot is built: building one costs O(n) after every write."""
        l2 = self.metric == "l2"
        if labels.size <= SMALL_RESULT:
            ids, meta = self._ids, self._meta
            snapshot = self._arrays[1] if self._arrays is not None else None
            out = []
            for row, sc in zip(labels.tolist(), distances.tolist(), strict=True):
                if -1 in row:
                    sc = [d for d, s in zip(sc, row, strict=True) if s >= 0]
                    row = [s for s in row if s >= 0]
                metadata = (
                    [meta[s] for s in row]
                    if snapshot is None
                    else functools.partial(_metadata_of, snapshot, row)
                )
                out.append(Hits([ids[s] for s in row], [-d for d in sc] if l2 else sc, metadata))
            return out
        id_array, meta_array = self._lookup()
        lazy_metadata = functools.partial(functools.partial, _metadata_of, meta_array)
        scores = (-distances if l2 else distances).tolist()
        out = list(map(Hits, id_array[labels].tolist(), scores, map(lazy_metadata, labels)))
        for n in np.flatnonzero((labels < 0).any(axis=1)).tolist():
            out[n] = out[n].take(np.flatnonzero(labels[n] >= 0).tolist())
        return out

    # -- building, compaction, persistence -------------------------------------------------

    def _exact_vectors(self, slots: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(slots) if slots.size else np.empty((0, self.dim), "f4")

    def _rebuild(self, live: np.ndarray, *, train: bool) -> None:
        """Re-create the index from the live slots, training it first when asked."""
        vectors = self._exact_vectors(live)
        if train:
            n = len(vectors)
            index = self._empty_index(nlist=self.spec.nlist_for(n))
            sample = vectors
            if n > TRAIN_SAMPLE:
                pick = np.random.default_rng(0).choice(n, TRAIN_SAMPLE, replace=False)
                sample = vectors[np.sort(pick)]
            index.train(sample)
            self._built = True
        elif self._built and self.spec.trainable:
            index = faiss.clone_index(self._index)
            index.reset()
        else:
            index = self._empty_index(staging=not self._built)
        if self._built and self.spec.family == "ivf":
            faiss.extract_index_ivf(index).make_direct_map(True)
        index.add(vectors)
        self._index = index
        self._unfiltered.clear()  # their nprobe defaults depend on the index
        self._compact_tables(live)

    def _compact_tables(self, live: np.ndarray) -> None:
        self._ids = [self._ids[s] for s in live.tolist()]
        self._meta = [self._meta[s] for s in live.tolist()]
        self._slot = {i: n for n, i in enumerate(self._ids)}  # type: ignore[misc]
        self._dead = 0
        self._changed()

    def compact(self) -> None:
        """Drop dead slots (deleted or overwritten records) from the index."""
        with self._lock.write():
            self._writable()
            self._compact()

    def _compact(self) -> None:
        if not self._dead:
            return
        live = np.flatnonzero(np.fromiter((i is not None for i in self._ids), bool))
        if self._built and self.spec.family == "sq":
            dead = np.setdiff1d(np.arange(len(self._ids)), live)
            self._index.remove_ids(faiss.IDSelectorBatch(dead))
            self._compact_tables(live)
        else:
            self._rebuild(live, train=False)

    def flush(self) -> None:
        """Build a trainable index once there is enough data, reclaim dead slots, and save."""
        with self._lock.write():
            if self._closed:
                return
            live_count = len(self._slot)
            if not self._built and live_count >= max(self.spec.min_train, 1):
                self._writable()
                live = np.flatnonzero(np.fromiter((i is not None for i in self._ids), bool))
                self._rebuild(live, train=True)
            dead_share = self._dead / max(len(self._ids), 1)
            if self._dead and (self.capabilities.deletes or dead_share > COMPACT_DEAD_FRACTION):
                self._writable()
                self._compact()
            if self.path is not None and self._dirty:
                self._writable()
                self._save()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        with self._lock.write():
            self._closed = True
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _save(self) -> None:
        assert self.path is not None
        gen = self._generation + 1
        files = {
            "index": f"index.{gen}.faiss",
            "ids": f"ids.{gen}.json",
            "metadata": f"metadata.{gen}.jsonl",
        }
        tmp = {k: self.path / f".{v}.tmp" for k, v in files.items()}
        faiss.write_index(self._index, str(tmp["index"]))
        tmp["ids"].write_text(json.dumps(self._ids, ensure_ascii=False))
        with tmp["metadata"].open("w", encoding="utf-8") as fh:
            for meta in self._meta:
                fh.write(json.dumps(meta, ensure_ascii=False))
                fh.write("\n")
        listing = {}
        for key, name in files.items():
            _fsync_rename(tmp[key], self.path / name)
            listing[key] = {
                "file": name,
                "bytes": (self.path / name).stat().st_size,
                "sha256": _sha256(self.path / name),
            }
        manifest = {
            "format": FORMAT_VERSION,
            "dim": self.dim,
            "metric": self.metric,
            "index": self.spec.name,
            "built": self._built,
            "generation": gen,
            "count": len(self._slot),
            "slots": len(self._ids),
            "files": listing,
        }
        tmp_manifest = self.path / f".{MANIFEST}.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        _fsync_rename(tmp_manifest, self.path / MANIFEST)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        keep = {entry["file"] for entry in listing.values()}
        for old in self.path.glob("*.*.*"):
            if old.name not in keep and re.fullmatch(r"(index|ids|metadata)\.\d+\.\w+", old.name):
                old.unlink()
        self._generation = gen
        self._dirty = False

    @classmethod
    def _load(cls, path: Path, uri: str, tuning: dict[str, Any]) -> FaissStore:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            if manifest.get("format") != FORMAT_VERSION:
                raise CorruptStore(
                    f"{path}: format {manifest.get('format')!r}, this embedrec reads "
                    f"{FORMAT_VERSION}"
                )
            dim, metric, files = int(manifest["dim"]), manifest["metric"], manifest["files"]
            spec = IndexSpec.parse(manifest["index"])
            if metric not in METRICS:
                raise CorruptStore(f"{path / MANIFEST}: unknown metric {metric!r}")
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise CorruptStore(f"{path / MANIFEST} is unreadable: {exc}") from None
        for key in ("index", "ids", "metadata"):
            entry = files.get(key) or {}
            file = path / str(entry.get("file", f"<{key} missing from manifest>"))
            if not file.is_file():
                raise CorruptStore(f"{file} is missing (listed in {path / MANIFEST})")
            if file.stat().st_size != entry.get("bytes") or _sha256(file) != entry.get("sha256"):
                raise CorruptStore(f"{file} is truncated or corrupted (checksum mismatch)")
        try:
            index = faiss.read_index(str(path / files["index"]["file"]))
            ids = json.loads((path / files["ids"]["file"]).read_text(encoding="utf-8"))
            lines = (path / files["metadata"]["file"]).read_text(encoding="utf-8").splitlines()
            meta = [_frozen(json.loads(line)) for line in lines]
        except (RuntimeError, ValueError) as exc:
            raise CorruptStore(f"{path}: cannot read the store files: {exc}") from None
        if index.d != dim or index.metric_type != _faiss_metric(metric):
            raise CorruptStore(f"{path}: the index does not match the manifest's dim or metric")
        if not (index.ntotal == len(ids) == len(meta) == manifest.get("slots")):
            raise CorruptStore(
                f"{path}: index ({index.ntotal}), ids ({len(ids)}) and metadata ({len(meta)}) "
                "disagree"
            )
        store = cls(path, dim=dim, metric=metric, spec=spec, uri=uri, **tuning)
        store._index = index
        store._built = bool(manifest.get("built", True))
        store._ids = ids
        store._meta = meta
        store._slot = {i: n for n, i in enumerate(ids) if i is not None}
        store._dead = len(ids) - len(store._slot)
        store._generation = int(manifest.get("generation", 0))
        return store
