"""`FaissStore`: the index, the slot table beside it, and the read/write lock that guards
both. Searches share the lock; writes, compaction and saves hold it alone."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from embedrec.stores.base import CheckedBatch, Hits, Record, VectorStore
from embedrec.stores.errors import (
    ConfigError,
    DimensionError,
    StoreError,
    StoreNotFound,
    StoreWriteError,
)
from embedrec.stores.faiss import persistence
from embedrec.stores.faiss.building import build_index
from embedrec.stores.faiss.hits import hits_of
from embedrec.stores.faiss.kinds import IndexSpec, SearchParams, UriOptions, new_index
from embedrec.stores.faiss.planner import IndexSearch
from embedrec.stores.faiss.table import SlotTable
from embedrec.stores.filters import Node
from embedrec.stores.uri import StoreURI

DEFAULT_KIND = "Flat"
# Measured by benchmarks/churn.py (docs/churn.md, figure docs/churn/threshold/
# p50_ratio_vs_dead_share.png): dead slots never cost recall@10, but an uncompacted store's
# single-query p50 reaches 1.5x a fresh build's at 21% dead (IVF; HNSW 23%) on Fashion-MNIST
# 20k; the smaller family's crossing, 18-27% over four runs (median 22%), rounded down to 0.05.
COMPACT_DEAD_FRACTION = 0.20


class RWLock:
    """Many concurrent searches, one writer at a time: `with lock.read():` / `lock.write()`.
    The read side is a plain context manager on a C lock, not a generator, and wakes writers
    only when one waits: it is on every search."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._waiting = 0

    def read(self) -> RWLock:
        return self

    def __enter__(self) -> None:
        mutex = self._mutex  # acquired and released by hand: `with` costs twice as much
        mutex.acquire()
        try:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        finally:
            mutex.release()

    def __exit__(self, *exc: object) -> None:
        mutex = self._mutex
        mutex.acquire()
        try:
            self._readers -= 1
            if self._waiting and not self._readers:
                self._cond.notify_all()
        finally:
            mutex.release()

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
        self._uri_params = SearchParams(ef, nprobe, k_factor)
        self.uri = uri or f"faiss:{path or ''}"
        self.capabilities = spec.capabilities(persistent=path is not None)
        self._table = SlotTable()
        self._built = not spec.trainable
        self._use(new_index(spec, dim, metric, ef_construction=ef_construction))
        self._generation = 0
        self._info: dict[str, Any] | None = None
        self._dirty = False
        self._lock = RWLock()
        self._lock_file: Any = None
        self._closed = False

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> FaissStore:
        path = Path(uri.location).expanduser() if uri.location else None
        asked = UriOptions.pop_from(uri, metric)
        kind, metric, tuning = asked.kind, asked.metric, asked.tuning
        if path is not None and (path / persistence.MANIFEST).exists():
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
        if path is not None and not persistence.holds_no_store(path):
            raise ConfigError(f"{path} is not empty and holds no FAISS store (no manifest.json)")
        spec = IndexSpec.parse(kind or DEFAULT_KIND)
        spec = spec.with_nlist(asked.nlist) if asked.nlist is not None else spec
        spec.check_dim(dim)
        return cls(path, dim=dim, metric=metric or "cosine", spec=spec, uri=uri.raw, **tuning)

    @classmethod
    def _load(cls, path: Path, uri: str, tuning: dict[str, Any]) -> FaissStore:
        saved = persistence.load(path)
        m = saved.manifest
        store = cls(path, dim=m.dim, metric=m.metric, spec=m.spec, uri=uri, **tuning)
        store._take(saved)
        return store

    def _take(self, saved: persistence.Saved) -> None:
        """Serve `saved`, a generation read from disk."""
        self._built = saved.manifest.built
        self._use(saved.index)
        self._table = SlotTable(saved.ids, saved.columns)
        self._generation = saved.manifest.generation
        self._info = saved.manifest.info

    def _use(self, index: faiss.Index) -> None:
        """Make `index` the one searches run on."""
        self._index = index
        self._search_over = IndexSearch(index, self.spec, built=self._built, nprobe=self.nprobe)

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
        handle = persistence.lock_for_writing(self.path, self._generation)
        self._lock_file = handle

    def _upsert(self, batch: CheckedBatch) -> int:
        with self._lock.write():
            self._writable()
            self._index.add(batch.vectors)
            self._table.append(batch.ids, batch.keys, batch.metadata, batch.packed_ids)
            self._dirty = True
        return len(batch)

    def _delete_slots(self, slots: list[int]) -> int:
        if slots:
            self._writable()
            self._table.kill(slots)
            self._dirty = True
        return len(slots)

    def _delete_ids(self, ids: list[str]) -> int:
        with self._lock.write():
            found = self._table.find(ids)
            return self._delete_slots(found[found >= 0].tolist())

    def _delete_filter(self, node: Node) -> int:
        with self._lock.write():
            return self._delete_slots(np.flatnonzero(self._table.select(node).mask).tolist())

    # -- reads ----------------------------------------------------------------------------

    def _fetch(self, ids: list[str]) -> list[Record]:
        with self._lock.read():
            kept, slots, vectors = self._read_vectors(ids)
            metadata = self._table.columns.rows(slots) if slots.size else []
            return [Record(i, vectors[n], dict(metadata[n])) for n, i in enumerate(kept)]

    def _fetch_vectors(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        with self._lock.read():
            kept, _, vectors = self._read_vectors(ids)
            return kept, vectors

    def _read_vectors(self, ids: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The ids found, their slots and their vectors (under the read lock)."""
        found = self._table.find(ids)
        slots = found[found >= 0]
        if not slots.size:
            return [], slots, np.zeros((0, self.dim), dtype=np.float32)
        kept = [i for i, s in zip(ids, found.tolist(), strict=True) if s >= 0]
        return kept, slots, self._index.reconstruct_batch(slots)

    def _ids(self) -> list[str]:
        with self._lock.read():
            return self._table.live_ids()

    def _fields(self) -> frozenset[str]:
        with self._lock.read():
            return self._table.fields()

    def _count(self, node: Node | None) -> int:
        with self._lock.read():
            return self._table.select(node).allowed

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]] | None,
    ) -> list[Hits]:
        with self._lock.read():
            chosen = self._uri_params.override(params) if params else self._uri_params
            k = min(k, self._table.live_count)  # work is bounded by the records there are
            if k == 0:
                return [Hits() for _ in range(len(queries))]
            if exclude is not None:
                return self._search_leaving_out(queries, k, node, chosen, exclude)
            over = self._search_over
            l2 = self.metric == "l2"
            if node is not None or self._table.dead:
                answer = over.filtered(queries, k, self._table.select(node), chosen)
                return hits_of(self._table, *answer, l2=l2)
            distances, labels = over.unfiltered(queries, k, chosen)  # no *args: they cost
            hits = hits_of(self._table, distances, labels, l2=l2)
            short = [n for n, row in enumerate(hits) if len(row.ids) < k]
            if short:  # an ANN search may reach fewer than k of the records
                answer = over.exact(queries[short], k, self._table.live())
                for n, row in zip(short, hits_of(self._table, *answer, l2=l2), strict=True):
                    hits[n] = row
            return hits

    def exhaustive_params(self) -> dict[str, int]:
        out = super().exhaustive_params()
        if "nprobe" in self.capabilities.search_params:
            with self._lock.read():
                out["nprobe"] = self._search_over.nlist
        return out

    def _search_held_out(
        self, ids: list[str], queries: np.ndarray, k: int, params: dict[str, Any]
    ) -> list[Hits]:
        """Plain searches for k + 1 hits, each query's own hit dropped, so that they run as
        an unfiltered `search` does (an exclusion would take the filtered path, which raises
        ef); over HNSW, in a copy of the graph with the queries' nodes cut out of it
        (planner.HeldOutGraph). With tombstones every search is filtered: the default
        exclusion then."""
        if self._table.dead:
            return super()._search_held_out(ids, queries, k, params)
        with self._lock.read():
            chosen = self._uri_params.override(params) if params else self._uri_params
            kk = min(k + 1, self._table.live_count)
            graph = self._search_over.held_out()
            if graph is None:  # no graph to walk: the plain search
                answer = self._search_over.unfiltered(queries, kk, chosen)
            else:
                slots = self._table.find(ids)
                answer = graph.search(queries, slots, kk, chosen)
            hits = hits_of(self._table, *answer, l2=self.metric == "l2")
        kept = [
            [n for n, hid in enumerate(h.ids) if hid != own][:k]
            for h, own in zip(hits, ids, strict=True)
        ]
        return [h.take(keep) for h, keep in zip(hits, kept, strict=True)]

    def _search_leaving_out(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        chosen: SearchParams,
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Excluded ids leave the search itself, through the same pre-filter mask as a
        filter, at k (`IndexSearch.leaving_out`), instead of over-fetching."""
        excluded = self._table.slots_of(exclude)
        answer = self._search_over.leaving_out(
            queries, k, self._table.select(node), excluded, chosen
        )
        return hits_of(self._table, *answer, l2=self.metric == "l2")

    # -- building, compaction, persistence -------------------------------------------------

    def _rebuild(self, live: np.ndarray, *, train: bool) -> None:
        """Re-create the index from the live slots, training it first when asked."""
        index = build_index(
            self._index,
            self.spec,
            live,
            train=train,
            built=self._built,
            ef_construction=self.ef_construction,
        )
        self._built = self._built or train
        self._use(index)
        self._table.keep(live)

    def compact(self) -> None:
        """Drop dead slots (deleted or overwritten records) from the index."""
        with self._lock.write():
            self._writable()
            self._compact()

    def _compact(self) -> None:
        if not self._table.dead:
            return
        live = self._table.live_slots()
        if self._built and self.spec.family == "sq":
            dead = np.setdiff1d(np.arange(len(self._table)), live)
            self._index.remove_ids(faiss.IDSelectorBatch(dead))
            self._table.keep(live)
        else:
            self._rebuild(live, train=False)
        self._dirty = True

    def flush(self) -> None:
        """Build a trainable index once there is enough data, reclaim dead slots, and save."""
        with self._lock.write():
            if self._closed:
                return
            table = self._table
            if not self._built and table.live_count >= max(self.spec.min_train, 1):
                self._writable()
                self._rebuild(table.live_slots(), train=True)
                self._dirty = True
            dead_share = self._table.dead / max(len(self._table), 1)
            if self._table.dead and (
                self.capabilities.deletes or dead_share > COMPACT_DEAD_FRACTION
            ):
                self._writable()
                self._compact()
            if self.path is not None and self._dirty:
                self._writable()
                self._save()

    def release(self) -> None:
        """Flush, then give up the directory's writer lock, so that another process may
        write it (docs/realtime.md: several workers over one FAISS store); the next write
        here takes the lock again, provided no one committed since (else `sync` first)."""
        self.flush()
        with self._lock.write():
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def sync(self) -> bool:
        """Load, in place, the generation another process committed since this handle
        loaded its own; True if it did. A handle that holds the writer lock is the only
        committer: it has nothing to load."""
        if self.path is None or self._lock_file is not None or self._closed:
            return False
        manifest = persistence.read_manifest(self.path)
        if manifest is None or manifest.generation == self._generation:
            return False
        saved = persistence.load(self.path)
        with self._lock.write():
            if self._lock_file is not None or saved.manifest.generation <= self._generation:
                return False  # this handle wrote meanwhile
            self._take(saved)
        return True

    def _read_info(self) -> dict[str, Any] | None:
        return self._info

    def _write_info(self, raw: dict[str, Any]) -> None:
        """Kept in the manifest, so the description commits with the next generation."""
        with self._lock.write():
            self._writable()
            self._info = raw
            self._dirty = True

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
        header = {
            "dim": self.dim,
            "metric": self.metric,
            "index": self.spec.name,
            "built": self._built,
            "count": self._table.live_count,
            "slots": len(self._table),
        }
        if self._info is not None:
            header["info"] = self._info
        table = self._table
        persistence.save(
            self.path, gen, self._index, table.ids.saved(table.alive), table.columns, header
        )
        self._generation = gen
        self._dirty = False
        try:
            persistence.settle(self.path, gen)
        except OSError as exc:
            raise StoreWriteError(
                f"{self.path}: generation {gen} is committed but not yet durable: {exc}"
            ) from exc
