"""Qdrant's own engine in process, through qdrant-edge-py: `qdrant+edge:PATH`.

One shard in a folder (WAL, segments), no server. Writes land in an appendable segment that
is searched by full scan (exact, correct at once); `flush()` (and `close()`) runs the
optimizer, which builds the HNSW index over segments past Qdrant's indexing threshold
(about 10 MB of vectors), then makes everything durable.

Options: `m`, `ef_construct` (HNSW, fixed at creation), `ef` (default search ef),
`indexes=genre,year` (payload indexes, typed by each field's first upserted value). A field
that a filter uses is indexed on first use too, so Qdrant can plan a filtered search by its
cardinality (exact search over a small filtered set, filtered HNSW over a large one).
Search params: `ef`, `exact`. The folder is held by one opener at a time.

Records map to points as described in qdrant_common; `embedrec.json` in the folder records
the dimension and metric.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from embedrec.stores.base import Capabilities, Hits, Record, VectorStore
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    StoreError,
    StoreLocked,
    StoreNotFound,
)
from embedrec.stores.filters import Node
from embedrec.stores.qdrant_common import (
    Dialect,
    LeavesOutInSearch,
    from_payload,
    hits_from,
    index_schema,
    indexed_keys,
    json_path,
    leave_out,
    point_id,
    search_options,
    to_payload,
    translate,
    value_schema,
)
from embedrec.stores.uri import StoreURI

log = logging.getLogger(__name__)

MANIFEST = "embedrec.json"
DISTANCES = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "l2": qe.Distance.Euclid}
SCHEMAS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
DIALECT = Dialect(
    Filter=qe.Filter,
    FieldCondition=qe.FieldCondition,
    MatchValue=qe.MatchValue,
    MatchAny=qe.MatchAny,
    Range=qe.RangeFloat,
    is_empty=qe.IsEmptyCondition,
    has_id=qe.HasIdCondition,
    matches_bools=False,
)
UPSERT_CHUNK = 1024
FULL_SCAN_THRESHOLD_KB = 10_000
"""Qdrant's default: a filtered set with fewer vectors' worth of KB is searched exactly."""


class QdrantEdgeStore(LeavesOutInSearch, VectorStore):
    def __init__(self, uri: str, path: Path, shard: Any, dim: int, metric: str) -> None:
        self.uri = uri
        self.path = path
        self.shard = shard
        self.dim = dim
        self.metric = metric  # type: ignore[assignment]
        self.default_ef: int | None = None
        self.indexed = indexed_keys(shard.info().payload_schema)
        self.pending_indexes: list[str] = []
        self.dirty = False
        self.capabilities = Capabilities(
            exact=False, search_params=("ef", "exact"), persistent=True
        )

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> QdrantEdgeStore:
        if not uri.location:
            raise ConfigError(f"{uri.raw}: expected qdrant+edge:PATH")
        path = Path(uri.location)
        hnsw = {"m": uri.pop_int("m", 16), "ef_construct": uri.pop_int("ef_construct", 100)}
        default_ef = uri.pop_int("ef")
        indexes = [f for f in (uri.pop("indexes") or "").split(",") if f]
        uri.done()
        manifest = path / MANIFEST
        if manifest.exists():
            store = cls._load(uri.raw, path, dim, metric)
        else:
            store = cls._create(uri.raw, path, dim, metric, hnsw)
        store.default_ef = default_ef
        store.pending_indexes = indexes
        return store

    @classmethod
    def _load(cls, uri: str, path: Path, dim: int | None, metric: str | None) -> QdrantEdgeStore:
        try:
            saved = json.loads((path / MANIFEST).read_text())
            stored_dim, stored_metric = int(saved["dim"]), str(saved["metric"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptStore(f"{uri}: unreadable {path / MANIFEST}: {exc}") from None
        if dim is not None and dim != stored_dim:
            raise DimensionError(f"{uri}: the store has dimension {stored_dim}, asked for {dim}")
        if metric is not None and metric != stored_metric:
            raise ConfigError(f"{uri}: the store uses metric {stored_metric}, asked for {metric}")
        try:
            shard = qe.EdgeShard.load(str(path))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(
                    f"{uri}: {path} is already open in another store or process "
                    "(a Qdrant Edge shard has one opener at a time); close that one first"
                ) from None
            raise CorruptStore(
                f"{uri}: cannot load the Qdrant Edge shard in {path}: {exc}"
            ) from exc
        return cls(uri, path, shard, stored_dim, stored_metric)

    @classmethod
    def _create(
        cls, uri: str, path: Path, dim: int | None, metric: str | None, hnsw: dict[str, int]
    ) -> QdrantEdgeStore:
        if dim is None:
            raise StoreNotFound(f"{uri}: no store at {path}; pass dim to create one")
        if (path / "edge_config.json").exists():
            raise StoreError(
                f"{uri}: {path} holds a Qdrant Edge shard that embedrec did not create "
                f"(no {MANIFEST}); open it with qdrant_edge directly or pick another path"
            )
        metric = metric or "cosine"
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=DISTANCES[metric]),
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw["m"],
                ef_construct=hnsw["ef_construct"],
                full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
            ),
        )
        try:
            shard = qe.EdgeShard.create(str(path), config)
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(f"{uri}: {path} is being created by another opener") from None
            raise StoreError(f"{uri}: cannot create a Qdrant Edge shard in {path}: {exc}") from exc
        tmp = path / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"dim": dim, "metric": metric}))
        os.replace(tmp, path / MANIFEST)
        return cls(uri, path, shard, dim, metric)

    @contextlib.contextmanager
    def guard(self) -> Iterator[Any]:
        """The open shard; engine errors (plain Exceptions) become StoreErrors naming it."""
        if self.shard is None:
            raise StoreError(f"{self.uri}: the store is closed")
        try:
            yield self.shard
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.uri}: Qdrant Edge failed: {exc}") from exc

    def _create_index(self, shard: Any, key: str, schema: str) -> None:
        shard.update(qe.UpdateOperation.create_field_index(json_path(key), SCHEMAS[schema]))
        self.indexed.add(key)
        log.debug("%s: created %s payload index on %r", self.uri, schema, key)

    def _upsert(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> int:
        payloads = [to_payload(i, m, True) for i, m in zip(ids, metadata, strict=True)]
        rows = vectors.tolist()
        with self.guard() as shard:
            for start in range(0, len(ids), UPSERT_CHUNK):
                points = [
                    qe.Point(point_id(ids[i]), rows[i], payloads[i])
                    for i in range(start, min(start + UPSERT_CHUNK, len(ids)))
                ]
                shard.update(qe.UpdateOperation.upsert_points(points))
            self.dirty = True
            for field in list(self.pending_indexes):
                value = next((m[field] for m in metadata if field in m), None)
                if value is not None:
                    key, schema = value_schema(field, value, DIALECT)
                    if key not in self.indexed:
                        self._create_index(shard, key, schema)
                    self.pending_indexes.remove(field)
        return len(ids)

    def _delete_ids(self, ids: list[str]) -> int:
        with self.guard() as shard:
            existing = [p.id for p in shard.retrieve([point_id(i) for i in ids], False, False)]
            if existing:
                shard.update(qe.UpdateOperation.delete_points(existing))
                self.dirty = True
        return len(existing)

    def _delete_filter(self, node: Node) -> int:
        qfilter = translate(node, DIALECT)
        with self.guard() as shard:
            n = shard.count(qe.CountRequest(exact=True, filter=qfilter))
            if n:
                shard.update(qe.UpdateOperation.delete_points_by_filter(qfilter))
                self.dirty = True
        return n

    def _fetch(self, ids: list[str]) -> list[Record]:
        with self.guard() as shard:
            points = shard.retrieve([point_id(i) for i in ids], True, True)
        by_id = {}
        for p in points:
            rid, meta = from_payload(p.payload)
            by_id[rid] = Record(rid, np.asarray(p.vector, dtype=np.float32), meta)
        return [by_id[i] for i in ids if i in by_id]

    def _index_filtered(self, shard: Any, node: Node) -> None:
        for key, schema in index_schema(node, DIALECT).items():
            if key not in self.indexed:
                self._create_index(shard, key, schema)

    def _search_excluding(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Excluded ids become a `must_not has_id` in each row's filter: one search at k."""
        ef, exact = search_options(params, self.default_ef)
        qfilter = translate(node, DIALECT)
        search = qe.SearchParams(hnsw_ef=ef, exact=exact)
        requests = [
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(q),
                filter=leave_out(qfilter, ex, DIALECT),
                params=search,
                with_payload=True,
            )
            for q, ex in zip(queries.tolist(), exclude, strict=True)
        ]
        with self.guard() as shard:
            if node is not None:
                self._index_filtered(shard, node)
            results = shard.query_batch(qe.QueryBatchRequest(requests))
        return [hits_from(points, self.metric == "l2") for points in results]

    def _count(self, node: Node | None) -> int:
        with self.guard() as shard:
            if node is not None:
                self._index_filtered(shard, node)
            return shard.count(qe.CountRequest(exact=True, filter=translate(node, DIALECT)))

    def optimize(self) -> bool:
        """Build the HNSW index (and merge/vacuum segments); True when anything changed."""
        with self.guard() as shard:
            changed = shard.optimize()
            self.dirty = False
        return changed

    def flush(self) -> None:
        if self.dirty:
            self.optimize()
        with self.guard() as shard:
            shard.flush()

    def close(self) -> None:
        if self.shard is None:
            return
        try:
            self.flush()
        finally:
            self.shard.close()
            self.shard = None
