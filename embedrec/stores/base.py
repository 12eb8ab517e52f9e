"""The store interface every backend implements, its core types and its errors.

`VectorStore` validates every call once, here, and hands the backend clean input through
the `_upsert` / `_delete` / `_fetch` / `_search` / `_count` hooks, so that a bad vector,
id, metadata value or filter gets the same error from every store.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, NoReturn, overload

import numpy as np

from embedrec.stores.errors import (
    ConfigError,
    DimensionError,
    IdError,
    MetadataError,
    StoreError,
    VectorError,
)
from embedrec.stores.filters import Node, parse_filter
from embedrec.stores.uri import StoreURI

Metric = Literal["cosine", "dot", "l2"]
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")
MetadataValue = str | int | float | bool | list[str]
MetadataOrNone = dict[str, MetadataValue] | None
MIN_OVERFETCH = 16
"""Extra hits asked for beyond k when over-fetching past excluded ids (at least k extra)."""
INT64 = (-(2**63), 2**63 - 1)
"""The integers metadata may hold: what Qdrant's payloads and JSON encoders take."""


@dataclass(slots=True)
class Record:
    id: str
    vector: np.ndarray
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


class Hit(NamedTuple):
    """A search result. `score` is higher-is-more-similar for every metric: the inner product
    for cosine and dot, the negated squared distance for l2.

    A named tuple: immutable and unpackable (`id, score, meta = hit`). Searches return
    `Hits`, which build them on access."""

    id: str
    score: float
    metadata: MetadataOrNone = None


_hit = functools.partial(tuple.__new__, Hit)
"""Hit((id, score, metadata)) built in C, without Hit.__new__'s Python frame."""


class Hits(Sequence[Hit]):
    """One query's hits, best first, held as three parallel lists: `ids`, `scores` and
    `metadata`. It reads as a sequence of `Hit` (index, slice, iterate, unpack, compare with a
    list of hits), but a `Hit` is built only when one is asked for.

    Why columns: FAISS answers a batch as arrays, and a Python object per hit costs about a
    tenth of a 128-d HNSW search (`benchmarks/faiss_store.py`). Callers that need only ids and
    scores (recall, a response body) read the columns and never build one. For the same
    reason a store may hand over the metadata as a function that reads it on first access
    from a snapshot taken at search time."""

    __slots__ = ("_metadata", "ids", "scores")

    def __init__(
        self,
        ids: list[str] | None = None,
        scores: list[float] | None = None,
        metadata: list[MetadataOrNone] | Callable[[], list[MetadataOrNone]] | None = None,
    ) -> None:
        self.ids = ids if ids is not None else []
        self.scores = scores if scores is not None else [0.0] * len(self.ids)
        self._metadata = metadata if metadata is not None else [None] * len(self.ids)
        if len(self.ids) != len(self.scores):
            raise ValueError(f"{len(self.ids)} ids for {len(self.scores)} scores")

    @property
    def metadata(self) -> list[MetadataOrNone]:
        if callable(self._metadata):
            self._metadata = self._metadata()
        return self._metadata

    @classmethod
    def of(cls, hits: Iterable[Hit]) -> Hits:
        rows = list(hits)
        return cls([h[0] for h in rows], [h[1] for h in rows], [h[2] for h in rows])

    def take(self, positions: Iterable[int]) -> Hits:
        """The hits at `positions`, in that order."""
        ids, scores, metadata = self.ids, self.scores, self.metadata
        at = list(positions)
        return Hits([ids[n] for n in at], [scores[n] for n in at], [metadata[n] for n in at])

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> Hit: ...
    @overload
    def __getitem__(self, i: slice) -> Hits: ...
    def __getitem__(self, i: int | slice) -> Hit | Hits:
        if isinstance(i, slice):
            return Hits(self.ids[i], self.scores[i], self.metadata[i])
        return _hit((self.ids[i], self.scores[i], self.metadata[i]))

    def __iter__(self) -> Iterator[Hit]:
        return map(_hit, zip(self.ids, self.scores, self.metadata, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            return (self.ids, self.scores, self.metadata) == (
                other.ids,
                other.scores,
                other.metadata,
            )
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple]:
        return (Hits, (self.ids, self.scores, self.metadata))  # the metadata, not its snapshot

    def __repr__(self) -> str:
        return f"Hits({list(self)!r})"


class FrozenMetadata(dict):
    """A record's metadata as a store holds it: a dict that refuses changes, so that hits can
    share it instead of copying it per hit. `dict(m)` or `m.copy()` gives a mutable copy."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a hit's metadata is read-only: change a copy, dict(hit.metadata)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (dict, (dict(self),))


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


def normalize_ids(ids: Iterable[str | int]) -> list[str]:
    """Stringify ids (ints are accepted) and reject empty ones, other types and duplicates."""
    out: list[str] = []
    seen: set[str] = set()
    for pos, raw in enumerate(ids):
        if isinstance(raw, bool) or not isinstance(raw, (str, int, np.integer)):
            raise IdError(
                f"id at position {pos} is {type(raw).__name__} {raw!r}: ids are str or int"
            )
        sid = str(int(raw)) if not isinstance(raw, str) else raw
        if not sid:
            raise IdError(f"id at position {pos} is empty")
        if sid in seen:
            raise IdError(f"id {sid!r} appears twice in one batch (again at position {pos})")
        seen.add(sid)
        out.append(sid)
    return out


def as_matrix(vectors: Any, dim: int, ids: Sequence[str] | None = None) -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy-free view where possible, with every row finite.

    `ids` name the records in error messages; without them rows are named by position.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"vectors must be (n, {dim}) or ({dim},), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionError(f"vectors have dimension {arr.shape[1]}, the store has {dim}")
    if ids is not None and len(ids) != arr.shape[0]:
        raise IdError(f"{len(ids)} ids for {arr.shape[0]} vectors")
    arr = np.ascontiguousarray(arr)
    # One dot product is finite exactly when every value is, unless large finite values
    # overflow it: only then, or for a bad row, the full elementwise check.
    if not math.isfinite(np.vdot(arr, arr)) and not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        name = f"record {ids[row]!r}" if ids is not None else f"query {row}"
        raise VectorError(f"{name}: vector contains NaN or inf")
    return arr


def l2_normalize(vectors: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # half np.linalg.norm's cost
    if not norms.all():
        row = int(np.flatnonzero(norms == 0)[0])
        name = f"record {ids[row]!r}" if ids is not None else f"query {row}"
        raise VectorError(f"{name}: zero vector has no direction under the cosine metric")
    return vectors / norms[:, None]


def check_metadata(record_id: str, metadata: Mapping[str, Any] | None) -> dict[str, MetadataValue]:
    """Validate one record's metadata and convert numpy scalars to Python values.

    Allowed: str, int, float (finite), bool, list of str. These are Pinecone's limits,
    applied everywhere so that every store holds the same data.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            f"record {record_id!r}: metadata must be a dict, got {type(metadata).__name__}"
        )
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        where = f"record {record_id!r}, key {key!r}"
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise MetadataError(f"{where}: keys are non-empty strings not starting with '$'")
        if isinstance(value, np.generic):
            value = value.item()
        if value is None:
            raise MetadataError(f"{where}: null values are not allowed; leave the key out")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not INT64[0] <= value <= INT64[1]
        ):
            raise MetadataError(f"{where}: {value} is outside the 64-bit integer range")
        if isinstance(value, (bool, int, str)):
            out[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise MetadataError(f"{where}: {value} is not a finite number")
            out[key] = value
        elif isinstance(value, Mapping):
            raise MetadataError(f"{where}: nested objects are not allowed")
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
            bad = next((v for v in items if not isinstance(v, str)), None)
            if bad is not None or any(v is None for v in items):
                raise MetadataError(
                    f"{where}: lists may hold only strings, found {type(bad).__name__} {bad!r}"
                )
            out[key] = items
        else:
            raise MetadataError(
                f"{where}: {type(value).__name__} is not allowed "
                "(str, int, float, bool or list of str)"
            )
    return out


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
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Insert or overwrite records; returns how many were written. Validates the whole
        batch first, so a bad record leaves the store untouched."""
        sids = normalize_ids(ids)
        if not sids:
            return 0
        mat = as_matrix(vectors, self.dim, sids)
        if metadata is None:
            metas = [{} for _ in sids]
        else:
            if len(metadata) != len(sids):
                raise MetadataError(f"{len(metadata)} metadata entries for {len(sids)} ids")
            metas = [check_metadata(i, m) for i, m in zip(sids, metadata, strict=True)]
        if self.metric == "cosine":
            mat = l2_normalize(mat, sids)
        return self._upsert(sids, mat, metas)

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

    def search(
        self,
        vectors: Any,
        k: int,
        *,
        filter: Mapping | None = None,
        params: Mapping[str, Any] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[Hits]:
        """Top-k `Hits` for each query row, best first. With a filter, the k best records that
        match it (fewer only when fewer match). `exclude` holds one collection of ids per
        query row that its hits must leave out (a user's seen items, the query item itself);
        k hits still come back whenever k records qualify."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise StoreError(f"k must be a positive integer, got {k!r}")
        if self.capabilities.max_k is not None and k > self.capabilities.max_k:
            raise StoreError(
                f"k={k}: {self.uri} answers at most top_k={self.capabilities.max_k:,} per query"
            )
        queries = as_matrix(vectors, self.dim)
        if self.metric == "cosine":
            queries = l2_normalize(queries)
        node = parse_filter(filter) if filter is not None else None
        checked = check_params(params, self.capabilities.search_params)
        if exclude is not None and len(exclude) != queries.shape[0]:
            raise StoreError(f"exclude has {len(exclude)} rows for {queries.shape[0]} queries")
        if queries.shape[0] == 0:
            return []
        if exclude is None or not any(exclude):
            return self._search(queries, int(k), node, checked)
        sets = [ex if isinstance(ex, (set, frozenset)) else {str(i) for i in ex} for ex in exclude]
        return self._search_excluding(queries, int(k), node, checked, sets)

    def count(self, filter: Mapping | None = None) -> int:
        return self._count(parse_filter(filter) if filter is not None else None)

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
    def _upsert(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> int: ...

    @abc.abstractmethod
    def _delete_ids(self, ids: list[str]) -> int: ...

    @abc.abstractmethod
    def _delete_filter(self, node: Node) -> int: ...

    @abc.abstractmethod
    def _fetch(self, ids: list[str]) -> list[Record]: ...

    @abc.abstractmethod
    def _search(
        self, queries: np.ndarray, k: int, node: Node | None, params: dict[str, Any]
    ) -> list[Hits]: ...

    @abc.abstractmethod
    def _count(self, node: Node | None) -> int: ...

    def _search_excluding(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Exclusion by over-fetching, for stores that cannot leave ids out themselves: each
        row asks for k plus some of its excluded count, and a row still short of k after
        dropping excluded ids asks again with a larger k, up to k + |excluded|, which is sure
        to suffice, or up to the store's `max_k`, past which a row may come back short."""
        cap = self.capabilities.max_k or math.inf
        need = [min(k + len(ex), cap) for ex in exclude]
        fetch = [min(k + min(len(ex), max(k, MIN_OVERFETCH)), cap) for ex in exclude]
        out: list[Hits] = [Hits() for _ in exclude]
        pending = list(range(len(exclude)))
        while pending:
            kk = max(fetch[i] for i in pending)
            answers = self._search(queries[pending], kk, node, params)
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
