"""What the Qdrant store asks of an engine: the few calls in which qdrant-client and
qdrant-edge-py differ. Everything else (payloads, filters, indexes, search planning, hits)
is written once in `store.py` and `dialect.py`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedrec.stores.qdrant.dialect import Dialect
from embedrec.stores.uri import StoreURI


class Engine(Protocol):
    """One Qdrant library holding one collection (or shard). Ids are point ids (UUIDs);
    points returned have `.id`, `.payload` and `.vector`, scored ones `.payload` and
    `.score`. Calls run inside `guard()`, which turns the library's failures into
    StoreErrors naming the engine."""

    dialect: Dialect
    dim: int
    metric: str
    ann: bool
    """False for a brute-force engine (exact search, no payload indexes, no search params)."""
    persistent: bool
    remote: bool
    hnsw_m: int
    """The graph's degree: with ef, how many vectors one ANN search scores."""
    default_ef: int
    """The ef a search uses when none is given (Qdrant's is the graph's ef_construct)."""
    upsert_chunk: int

    @classmethod
    def connect(cls, uri: StoreURI) -> Engine:
        """Consume this engine's URI options and make its client; no collection yet."""
        ...

    def attach(self, uri: str, dim: int | None, metric: str | None) -> None:
        """Open the collection, or create it (needs `dim`); check dim and metric."""
        ...

    def guard(self) -> AbstractContextManager[None]: ...

    def upsert(self, ids: list[str], rows: list[list[float]], payloads: list[dict]) -> None: ...

    def retrieve(self, ids: list[str], with_data: bool) -> list[Any]: ...

    def delete(self, ids: list[Any]) -> None: ...

    def scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        """Up to `limit` points (payloads, no vectors) from `offset` (None: the first), and
        the offset of the next page (None after the last)."""
        ...

    def delete_filter(self, qfilter: Any) -> None: ...

    def count(self, qfilter: Any) -> int: ...

    def query(
        self,
        vectors: list[list[float]],
        filters: Sequence[Any],
        k: int,
        ef: int | None,
        exact: bool,
    ) -> list[list[Any]]:
        """One list of scored points (best first) per vector, each under its filter."""
        ...

    def indexed(self) -> set[str]:
        """The payload keys that have a payload index."""
        ...

    def create_index(self, key: str, schema: str) -> None:
        """Create a payload index; set `stale_graph` where a graph already exists."""
        ...

    stale_graph: bool
    """True from a payload index created after the graph was built (it has no links in the
    graph) until `rebuild()`; kept across reopening."""

    def rebuild(self) -> None:
        """Rebuild the graph so that every payload index gets its filter-aware links."""
        ...

    def read_info(self) -> dict[str, Any] | None:
        """The store info kept with the collection, as written (the store validates it)."""
        ...

    def write_info(self, raw: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class SoleWriter(Protocol):
    """An engine whose data only this store writes (in process), so that what it reads
    stays true until the store's next write: the store may keep a filter's vectors."""

    def matching_vectors(self, qfilter: Any) -> tuple[list[Any], np.ndarray]:
        """The ids and vectors (float32 rows, as stored) of the points matching a filter."""
        ...

    def payloads(self, ids: list[Any]) -> dict[Any, dict]:
        """The payloads of these points (ids as `matching_vectors` gave them), by id."""
        ...
