"""The store interface every backend implements, its core types and its errors.

`VectorStore` validates every call once, here, and hands the backend clean input through
the `_upsert` / `_delete` / `_fetch` / `_search` / `_count` hooks, so that a bad vector,
id, metadata value or filter gets the same error from every store.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import reprlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from embedrec.common.vectors import ZeroVectorError, l2_normalize
from embedrec.stores.batch_checks import MAX_INT as MAX_INT  # re-exported
from embedrec.stores.batch_checks import (
    REFUSALS,
    CheckedBatch,
    MetadataInput,
    Refusal,
    checked_ids,
    checked_metadata,
    count_error,
    join_batches,
    metadata_rows,
)
from embedrec.stores.batch_checks import check_metadata as check_metadata  # re-exported
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    IdError,
    StoreError,
    VectorError,
)
from embedrec.stores.filters import Node, check_fields, parse_filter
from embedrec.stores.info import METRICS as METRICS  # re-exported
from embedrec.stores.info import StoreInfo
from embedrec.stores.results import FrozenMetadata as FrozenMetadata  # re-exported
from embedrec.stores.results import Hit as Hit  # re-exported
from embedrec.stores.results import Hits, Record
from embedrec.stores.results import MetadataOrNone as MetadataOrNone  # re-exported
from embedrec.stores.results import MetadataValue as MetadataValue  # re-exported
from embedrec.stores.text import normalize_ids
from embedrec.stores.uri import StoreURI
from embedrec.stores.vector_input import as_matrix

Metric = Literal["cosine", "dot", "l2"]
MIN_OVERFETCH = 16
"""Extra hits asked for beyond k when over-fetching past excluded ids (at least k extra)."""
FIELD_KINDS: tuple[str, ...] = ("str", "int", "float", "bool", "list")
"""The metadata kinds `VectorStore.declare_fields` takes."""
MAX_K = 2**31 - 1
"""A k beyond any store's size; stores also bound their work by the records they hold."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    exact: bool
    """True when search returns the exact top-k (brute force), False for ANN indexes."""
    search_params: tuple[str, ...] = ()
    """Per-call search parameters the store understands, such as `ef` or `nprobe`."""
    max_batch: int = 10_000
    """Largest number of vectors the store takes well in one upsert call."""
    persistent: bool = False
    deletes: bool = True
    """False where deletes are tombstones that need a `compact()` to free space."""
    exact_vectors: bool = True
    """False where `fetch` returns quantised vectors (SQ8) rather than those upserted."""
    max_k: int | None = None
    """The largest k one search answers (Pinecone's top_k limit); None for no limit."""
    remote: bool = False
    """True where calls cross the network (a Qdrant server, Pinecone), so that one can hang
    and callers should bound it with a timeout; in-process stores answer or raise."""
    excludes_in_search: bool = False
    """True where `_search` leaves excluded ids out within the search itself (it then gets one
    collection of ids per query); others get exclusion by over-fetching in `search`."""


def check_params(params: Mapping[str, Any] | None, allowed: Sequence[str]) -> dict[str, Any]:
    if not params:
        return {}
    params = dict(params)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown search params {unknown}; this store takes {sorted(allowed) or 'none'}"
        )
    return params


def _unit_rows(mat: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
    """Rows scaled to unit length for the cosine metric; a zero row is a `VectorError`."""
    try:
        return l2_normalize(mat, zero_rows="refuse", ids=ids)
    except ZeroVectorError as exc:
        raise VectorError(str(exc)) from None


class VectorStore(abc.ABC):
    """One interface over every vector store. Subclasses implement the `_` hooks."""

    uri: str
    dim: int
    metric: Metric
    capabilities: Capabilities

    @classmethod
    @abc.abstractmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> VectorStore:
        """Open the store `uri` names, creating it when absent (then `dim` is required and
        `metric` defaults to cosine). Consume the options you understand, then `uri.done()`."""

    # -- public API: validation, then the backend hook ------------------------------------

    def upsert(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: MetadataInput = None,
    ) -> int:
        """Insert or overwrite records; returns how many were written. Validates the whole
        batch first, so a bad record leaves the store untouched. `metadata`: a dict (or
        None) per record, or the same as columns, {field: a value per record, None where the
        record has none}, which large batches check and write faster."""
        return self.upsert_checked(self.check_batch(ids, vectors, metadata))

    def check_batch(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: MetadataInput = None,
    ) -> CheckedBatch:
        """The checks of `upsert`, without the write: the batch as this store takes it, or
        the error naming the first bad record, field and reason."""
        sids, keys, packed = checked_ids(ids)
        mat = as_matrix(vectors, self.dim, sids)  # IdError when the counts differ
        miscounted = count_error(metadata, len(sids))
        if miscounted is not None:
            raise miscounted
        metas = checked_metadata(sids, metadata)
        unit = self.metric == "cosine"
        if unit and sids:
            mat = _unit_rows(mat, sids)
        return CheckedBatch(sids, keys, mat, metas, self.dim, unit, packed)

    def check_records(
        self,
        ids: Sequence[str | int],
        vectors: np.ndarray,
        metadata: MetadataInput = None,
    ) -> tuple[CheckedBatch, list[Refusal]]:
        """`check_batch` record by record where the batch as a whole fails: the records that
        pass, and each one that does not (an id seen before in the batch included) with its
        position and the error naming it. Counts that differ or vectors of another dimension
        are the batch's errors, raised."""
        try:
            return self.check_batch(ids, vectors, metadata), []
        except REFUSALS:
            if len(ids) != len(vectors) or count_error(metadata, len(ids)) is not None:
                raise
        rows = metadata_rows(metadata)
        good: list[CheckedBatch] = []
        refused: list[Refusal] = []
        seen: set[str] = set()
        for pos, rid in enumerate(ids):
            meta = None if rows is None else [rows[pos]]
            try:
                one = self.check_batch([rid], vectors[pos : pos + 1], meta)
                if one.ids[0] in seen:
                    again = f"appears twice in one batch (again at position {pos})"
                    raise IdError(f"id {one.ids[0]!r} {again}")
            except REFUSALS as exc:
                refused.append((pos, exc))
                continue
            seen.add(one.ids[0])
            good.append(one)
        return join_batches(good, self.dim, self.metric == "cosine"), refused

    def upsert_checked(self, batch: CheckedBatch) -> int:
        """Write a batch that this store's `check_batch` (or `check_records`) made, without
        checking its records again; returns how many were written."""
        if not isinstance(batch, CheckedBatch):
            raise StoreError(f"upsert_checked takes a CheckedBatch, got {type(batch).__name__}")
        if batch.dim != self.dim:
            raise DimensionError(f"a batch of {batch.dim}-d vectors; {self.uri} has {self.dim}")
        if not batch.ids:
            return 0
        if self.metric == "cosine" and not batch.unit:
            batch = dataclasses.replace(
                batch, vectors=_unit_rows(batch.vectors, batch.ids), unit=True
            )
        return self._upsert(batch)

    def delete(
        self, ids: Sequence[str | int] | None = None, *, filter: Mapping | None = None
    ) -> int:
        """Delete by ids or by filter (`filter={}` deletes everything); returns how many went."""
        if (ids is None) == (filter is None):
            raise StoreError("delete takes either ids or filter, not both and not neither")
        if ids is not None:
            sids = normalize_ids(ids)
            return self._delete_ids(sids) if sids else 0
        return self._delete_filter(parse_filter(filter))

    def fetch(self, ids: Sequence[str | int]) -> list[Record]:
        """Records for the ids that exist, in the order asked; missing ids are left out."""
        sids = normalize_ids(ids)
        return self._fetch(sids) if sids else []

    def fetch_vectors(self, ids: Sequence[str | int]) -> tuple[list[str], np.ndarray]:
        """The vectors alone of the ids that exist, in the order asked: those ids and a
        float32 matrix with a row each. What a query built from stored items needs (a
        history's items, an item's neighbours): FAISS reads no metadata for it (a 50-item
        history's vectors: 0.1-0.2x the CPU of `fetch`)."""
        sids = normalize_ids(ids)
        if not sids:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return self._fetch_vectors(sids)

    def search(
        self,
        vectors: Any,
        k: int,
        *,
        filter: Mapping | Node | None = None,
        params: Mapping[str, Any] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[Hits]:
        """Top-k `Hits` for each query row, best first. With a filter, the k best records that
        match it (fewer only when fewer match). `exclude` holds one collection of ids per
        query row that its hits must leave out (a user's seen items, the query item itself);
        k hits still come back whenever k records qualify. `params` go over the store's
        calibrated search defaults (`StoreInfo.search_defaults`, `embedrec calibrate`). A
        filter already parsed (`parse_filter`, as the client does) is taken as it is."""
        if type(k) is not int or not 0 < k <= (self.capabilities.max_k or MAX_K):
            self._check_k(k)  # the error, or a numpy integer
            k = int(k)
        queries = as_matrix(vectors, self.dim)
        if self.metric == "cosine":
            queries = _unit_rows(queries)
        node = self.check_filter(filter) if filter is not None else None
        defaults = self._search_defaults()  # the store's known params: checked already
        if params:  # a call's own params win
            checked = check_params({**defaults, **params}, self.capabilities.search_params)
        else:
            checked = {**defaults}
        n = len(queries)
        if exclude is not None and len(exclude) != n:
            raise StoreError(f"exclude has {len(exclude)} rows for {n} queries")
        if n == 0:
            return []
        if exclude is None or not any(exclude):
            return self._search(queries, k, node, checked, None)
        sets = [ex if isinstance(ex, (set, frozenset)) else {str(i) for i in ex} for ex in exclude]
        if self.capabilities.excludes_in_search:
            return self._search(queries, k, node, checked, sets)
        return self._over_fetch(queries, k, node, checked, sets)

    def _check_k(self, k: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise StoreError(f"k must be a positive integer, got {reprlib.repr(k)}")
        if k > MAX_K:
            raise StoreError(f"k={k} is beyond what any store holds (at most {MAX_K:,})")
        if self.capabilities.max_k is not None and k > self.capabilities.max_k:
            raise StoreError(
                f"k={k}: {self.uri} answers at most top_k={self.capabilities.max_k:,} per query"
            )

    def search_held_out(
        self, ids: Sequence[str | int], k: int, *, params: Mapping[str, Any] | None = None
    ) -> list[Hits]:
        """Search each stored record's own vector as if the record were not in the store: its
        hits leave it out, and it does not lead the search to the others (from its own node a
        graph search would follow the record's links, which a new query cannot). Calibration
        measures recall with it; an id the store lacks is an `IdError`."""
        sids = normalize_ids(ids)
        self._check_k(k)
        records = self.fetch(sids)
        if len(records) != len(sids):
            missing = sorted(set(sids) - {r.id for r in records})
            raise IdError(f"{self.uri} holds no record {missing[0]!r} ({len(missing)} missing)")
        if not sids:
            return []
        queries = as_matrix(np.stack([r.vector for r in records]), self.dim)
        params = {**self._search_defaults(), **(params or {})}
        checked = check_params(params, self.capabilities.search_params)
        return self._search_held_out(sids, queries, int(k), checked)

    def _search_defaults(self) -> dict[str, Any]:
        """The search params calibrated for this store (`StoreInfo.search_defaults`, those
        it takes), under which a call's own params are merged: read once, then kept until
        `set_info` replaces them. A filter still raises the effort from them, as from any
        params. Stores without search params never read their info here."""
        cached: dict[str, Any] | None = getattr(self, "_defaults", None)
        if cached is None:
            known = self.capabilities.search_params
            info = self.info if known else None
            found = info.search_defaults if info is not None else {}
            cached = self._defaults = {k: v for k, v in found.items() if k in known}
        return cached

    def exhaustive_params(self) -> dict[str, int]:
        """Per search param, the value at which a search considers every live record, past
        which more effort changes nothing: a graph's `ef` at the live count (its candidate
        list then holds every node it reaches); IVF's `nprobe` at nlist. Calibration extends
        its grids to these, so any recall the index can reach is reached."""
        return {"ef": max(self.count(), 1)} if "ef" in self.capabilities.search_params else {}

    def ids(self) -> list[str]:
        """Every id the store holds, for work that samples the whole store (calibration);
        `StoreError` from a store that cannot list them."""
        return list(self._ids())

    def _over_fetch(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Exclusion for stores that cannot leave ids out themselves: each row asks for k plus
        some of its excluded count, and a row still short of k after dropping excluded ids
        asks again with a larger k, up to k + |excluded|, which is sure to suffice, or up to
        the store's `max_k`, past which a row may come back short."""
        cap = self.capabilities.max_k or math.inf
        need = [min(k + len(ex), cap) for ex in exclude]
        fetch = [min(k + min(len(ex), max(k, MIN_OVERFETCH)), cap) for ex in exclude]
        out: list[Hits] = [Hits() for _ in exclude]
        pending = list(range(len(exclude)))
        while pending:
            kk = max(fetch[i] for i in pending)
            answers = self._search(queries[pending], kk, node, params, None)
            still_short = []
            for i, hits in zip(pending, answers, strict=True):
                kept = [n for n, hid in enumerate(hits.ids) if hid not in exclude[i]][:k]
                if len(kept) >= k or len(hits) < kk or kk >= need[i]:
                    out[i] = hits.take(kept)
                else:
                    fetch[i] = min(need[i], 4 * kk)
                    still_short.append(i)
            pending = still_short
        return out

    def count(self, filter: Mapping | None = None) -> int:
        return self._count(self.check_filter(filter) if filter is not None else None)

    def fields(self) -> frozenset[str] | None:
        """The metadata fields of the live records; None where the store cannot know them
        (Qdrant, Pinecone: see the README's filter language) or holds no metadata."""
        return self._fields() or None

    def check_filter(self, filter: Mapping | Node) -> Node:
        """The filter (a dict, or one parsed already), validated; a field that no record has
        is a `FilterError` (`fields`)."""
        node = filter if isinstance(filter, Node) else parse_filter(filter)
        return check_fields(node, self.fields(), self.uri)

    def declare_fields(self, fields: Mapping[str, str]) -> None:
        """Declare the metadata schema known before writing: field name -> kind, one of
        "str", "int", "float", "bool", "list". Ingestion calls it before its first upsert so
        that stores with payload indexes (Qdrant) build them before the graph, whose
        filter-aware links only exist for indexes present when it is built."""
        if not isinstance(fields, Mapping):
            raise ConfigError(f"fields must be a mapping of name to kind, got {fields!r}")
        for name, kind in fields.items():
            if not isinstance(name, str) or not name or name.startswith("$"):
                raise ConfigError(f"field name {name!r}: non-empty strings not starting with '$'")
            if kind not in FIELD_KINDS:
                raise ConfigError(f"field {name!r}: kind {kind!r} is not one of {FIELD_KINDS}")
        self._declare_fields(dict(fields))

    @property
    def info(self) -> StoreInfo | None:
        """What the store says about itself (its embedder, search defaults), None for a store
        no one has described; `CorruptStore` when what it holds is damaged."""
        raw = self._read_info()
        if raw is None:
            return None
        info = StoreInfo.from_json(raw, self.uri)
        if (info.dim, info.metric) != (self.dim, self.metric):
            raise CorruptStore(
                f"{self.uri}: the store info describes {info.dim}-d {info.metric} vectors, "
                f"the store holds {self.dim}-d {self.metric}"
            )
        return info

    def set_info(self, info: StoreInfo) -> None:
        """Describe the store, replacing any description; durable by the next `flush()`."""
        if not isinstance(info, StoreInfo):
            raise ConfigError(f"set_info takes a StoreInfo, got {type(info).__name__}")
        if info.dim != self.dim:
            raise DimensionError(f"store info for {info.dim}-d vectors; {self.uri} has {self.dim}")
        if info.metric != self.metric:
            raise ConfigError(f"store info for metric {info.metric}; {self.uri} uses {self.metric}")
        if self._read_info() != info.to_json():
            self._write_info(info.to_json())
        self._defaults = None  # read again by the next search

    def flush(self) -> None:  # noqa: B027 (a no-op for stores that need nothing)
        """Make every write durable and searchable (build indexes, save, wait for consistency)."""

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, dim={self.dim}, metric={self.metric!r})"

    # -- backend hooks: inputs are already validated ---------------------------------------

    @abc.abstractmethod
    def _upsert(self, batch: CheckedBatch) -> int:
        """Write a checked batch of this store's dimension (unit rows for cosine); its
        metadata reads as a dict per record, and a FAISS store takes its columns and id keys
        as they are."""

    @abc.abstractmethod
    def _delete_ids(self, ids: list[str]) -> int: ...

    @abc.abstractmethod
    def _delete_filter(self, node: Node) -> int: ...

    @abc.abstractmethod
    def _fetch(self, ids: list[str]) -> list[Record]: ...

    @abc.abstractmethod
    def _search(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]] | None,
    ) -> list[Hits]:
        """Top-k per query row. `exclude` is None unless `capabilities.excludes_in_search`
        is set and the call excludes ids: then it holds one collection per row (maybe empty)."""

    @abc.abstractmethod
    def _count(self, node: Node | None) -> int: ...

    def _fetch_vectors(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """From `_fetch`; a store that can leave the metadata unread overrides it."""
        records = self._fetch(ids)
        matrix = np.array([r.vector for r in records], dtype=np.float32)
        return [r.id for r in records], matrix.reshape(len(records), self.dim)

    def _fields(self) -> frozenset[str] | None:
        return None  # a store that cannot list its records' fields

    def _declare_fields(self, fields: dict[str, str]) -> None:  # noqa: B027 (optional hook)
        """Prepare for the declared metadata fields; a no-op for stores without indexes."""

    def _search_held_out(
        self, ids: list[str], queries: np.ndarray, k: int, params: dict[str, Any]
    ) -> list[Hits]:
        """Excludes each query's own id: enough for stores whose search does not walk
        through excluded records (Qdrant's filtered graph search) and for exact ones."""
        return self.search(queries, k, params=params, exclude=[[i] for i in ids])

    def _ids(self) -> Iterable[str]:
        """Every stored id; stores that can list their records override it."""
        raise StoreError(f"{self.uri}: this store cannot list its ids")

    def _read_info(self) -> dict[str, Any] | None:
        """The store info as persisted (validated by `info`). By default it lives with this
        object only: persistent stores override both hooks to keep it with their data."""
        return getattr(self, "_held_info", None)

    def _write_info(self, raw: dict[str, Any]) -> None:
        self._held_info = raw
