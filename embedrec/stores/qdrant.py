"""Qdrant through qdrant-client 1.20: a server, or the client's local mode.

- `qdrant://host:6333/collection`: a Qdrant server (REST; `?grpc=1` for gRPC on
  `grpc_port`, default 6334; `?https=1` for TLS). The API key comes from `QDRANT_API_KEY`.
  Creation options: `m`, `ef_construct` (HNSW), `on_disk` (vectors, graph and payload on
  disk), `shard_number`, `replication_factor` (clusters). `ef` sets the default search ef;
  `timeout` (seconds, default 10) bounds every request, and a server that is down or slower
  than that raises `StoreUnavailable` naming its URL. `indexes=genre,year` creates payload
  indexes on those fields (typed by their first upserted value); any other field a filter
  uses is indexed on first use.
- `qdrant+local:PATH/collection` and `qdrant+memory:collection`: qdrant-client's local
  mode, the same API run in Python. For tests and development only: search is brute force
  (exact) and filters are evaluated point by point, fine up to about 20,000 points; it has
  no HNSW, shards or payload indexes, so it takes none of the options above. A local path
  is held by one client at a time.

Records map to points as described in qdrant_common.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from embedrec.stores.base import Capabilities, Hits, Record, VectorStore
from embedrec.stores.errors import (
    ConfigError,
    DimensionError,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreUnavailable,
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

DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "l2": models.Distance.EUCLID,
}
SCHEMAS = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
}
DIALECT = Dialect(
    Filter=models.Filter,
    FieldCondition=models.FieldCondition,
    MatchValue=models.MatchValue,
    MatchAny=models.MatchAny,
    Range=models.Range,
    is_empty=lambda key: models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
    has_id=lambda ids: models.HasIdCondition(has_id=sorted(ids)),
)
UPSERT_CHUNK = 256
SERVER_OPTIONS = ("m", "ef_construct", "on_disk", "shard_number", "replication_factor")


def _grpc_unavailable(exc: BaseException) -> bool:
    try:
        import grpc
    except ImportError:
        return False
    return isinstance(exc, grpc.RpcError) and exc.code() in (  # type: ignore[attr-defined]
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


class QdrantStore(LeavesOutInSearch, VectorStore):
    def __init__(
        self,
        uri: str,
        client: QdrantClient,
        collection: str,
        *,
        where: str,
        server: bool,
        persistent: bool,
        timeout: int,
    ) -> None:
        self.uri = uri
        self._closed = False
        self.client = client
        self.collection = collection
        self.where = where
        self.server = server
        self.timeout = timeout
        self.default_ef: int | None = None
        self.indexed: set[str] = set()
        self.pending_indexes: list[str] = []
        self.capabilities = Capabilities(
            exact=not server,
            search_params=("ef", "exact") if server else (),
            persistent=persistent,
            remote=server,
        )

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> QdrantStore:
        store = cls._open_server(uri) if uri.scheme == "qdrant" else cls._open_local(uri)
        try:
            with store.guard():
                store._attach(uri, dim, metric)
        except BaseException:
            store.client.close()
            raise
        return store

    @classmethod
    def _open_server(cls, uri: StoreURI) -> QdrantStore:
        parts = urlsplit(f"//{uri.location}")
        collection = parts.path.strip("/")
        if not parts.hostname or not collection or "/" in collection:
            raise ConfigError(f"{uri.raw}: expected qdrant://host:port/collection")
        try:
            port = parts.port or 6333
        except ValueError:
            raise ConfigError(f"{uri.raw}: bad port in {uri.location!r}") from None
        https = uri.pop_bool("https")
        grpc = uri.pop_bool("grpc")
        grpc_port = uri.pop_int("grpc_port", 6334)
        timeout = uri.pop_int("timeout", 10)
        if timeout is None or timeout < 1:
            raise ConfigError(f"{uri.raw}: timeout must be a positive number of seconds")
        url = f"{'https' if https else 'http'}://{parts.hostname}:{port}"
        where = f"Qdrant at {url}" + (f" (gRPC port {grpc_port})" if grpc else "")
        client = QdrantClient(
            url=url,
            grpc_port=grpc_port,
            prefer_grpc=grpc,
            api_key=os.environ.get("QDRANT_API_KEY") or None,
            timeout=timeout,
            check_compatibility=False,
        )
        return cls(
            uri.raw, client, collection, where=where, server=True, persistent=True, timeout=timeout
        )

    @classmethod
    def _open_local(cls, uri: StoreURI) -> QdrantStore:
        given = sorted(set(uri.options) & {*SERVER_OPTIONS, "ef", "indexes", "grpc", "timeout"})
        if given:
            raise ConfigError(
                f"{uri.raw}: option(s) {', '.join(given)} apply to a Qdrant server only; "
                f"{uri.scheme} is qdrant-client's brute-force local mode"
            )
        if uri.scheme == "qdrant+memory":
            collection = uri.location
            if not collection or "/" in collection:
                raise ConfigError(f"{uri.raw}: expected qdrant+memory:collection")
            client = QdrantClient(location=":memory:")
            return cls(
                uri.raw,
                client,
                collection,
                where="in-memory Qdrant",
                server=False,
                persistent=False,
                timeout=0,
            )
        path, _, collection = uri.location.rstrip("/").rpartition("/")
        if not path or not collection:
            raise ConfigError(f"{uri.raw}: expected qdrant+local:PATH/collection")
        try:
            client = QdrantClient(path=path)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLocked(
                    f"{uri.raw}: the Qdrant local storage {path!r} is open in another client "
                    "or process; close it first (local mode allows one client per folder)"
                ) from None
            raise StoreError(f"{uri.raw}: cannot open local Qdrant storage: {exc}") from exc
        return cls(
            uri.raw,
            client,
            collection,
            where=f"local Qdrant at {path}",
            server=False,
            persistent=True,
            timeout=0,
        )

    def _attach(self, uri: StoreURI, dim: int | None, metric: str | None) -> None:
        indexes = [f for f in (uri.pop("indexes") or "").split(",") if f]
        self.default_ef = uri.pop_int("ef")
        config = {
            "m": uri.pop_int("m"),
            "ef_construct": uri.pop_int("ef_construct"),
            "on_disk": uri.pop_bool("on_disk") if "on_disk" in uri.options else None,
            "shard_number": uri.pop_int("shard_number"),
            "replication_factor": uri.pop_int("replication_factor"),
        }
        uri.done()
        if self.client.collection_exists(self.collection):
            info = self.client.get_collection(self.collection)
            params = info.config.params.vectors
            if not isinstance(params, models.VectorParams):
                raise ConfigError(
                    f"{self.uri}: collection {self.collection!r} has named vectors; "
                    "embedrec stores use one unnamed vector"
                )
            stored = next((k for k, v in DISTANCES.items() if v == params.distance), None)
            if stored is None:
                raise ConfigError(
                    f"{self.uri}: collection uses distance {params.distance}, which embedrec "
                    "does not support"
                )
            if dim is not None and dim != params.size:
                raise DimensionError(
                    f"{self.uri}: collection has dimension {params.size}, asked for {dim}"
                )
            if metric is not None and metric != stored:
                raise ConfigError(
                    f"{self.uri}: collection uses metric {stored}, asked for {metric}"
                )
            self.dim, self.metric = params.size, stored
            self.indexed = indexed_keys(info.payload_schema or {})
        else:
            if dim is None:
                raise StoreNotFound(
                    f"{self.uri}: collection {self.collection!r} does not exist in {self.where}; "
                    "pass dim to create it"
                )
            self.dim, self.metric = dim, (metric or "cosine")  # type: ignore[assignment]
            self._create(config)
        self.pending_indexes = indexes if self.server else []

    def _create(self, config: dict[str, Any]) -> None:
        hnsw = None
        if config["m"] is not None or config["ef_construct"] is not None or config["on_disk"]:
            hnsw = models.HnswConfigDiff(
                m=config["m"], ef_construct=config["ef_construct"], on_disk=config["on_disk"]
            )
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(
                size=self.dim, distance=DISTANCES[self.metric], on_disk=config["on_disk"]
            ),
            hnsw_config=hnsw,
            on_disk_payload=config["on_disk"],
            shard_number=config["shard_number"],
            replication_factor=config["replication_factor"],
        )

    # -- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn transport failures into StoreUnavailable and server refusals into StoreError."""
        if self._closed:
            raise StoreError(f"{self.uri} is closed")
        try:
            yield
        except StoreError:
            raise
        except (ResponseHandlingException, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailable(
                f"{self.where} did not answer (timeout {self.timeout} s): {exc.__cause__ or exc}"
            ) from exc
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            detail = exc.content.decode(errors="replace")[:300]
            if status >= 500 or status in (408, 429):
                raise StoreUnavailable(f"{self.where} answered {status}: {detail}") from exc
            raise StoreError(f"{self.where} refused the request ({status}): {detail}") from exc
        except Exception as exc:
            if _grpc_unavailable(exc):
                detail = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                raise StoreUnavailable(
                    f"{self.where} did not answer (timeout {self.timeout} s): {detail}"
                ) from exc
            raise StoreError(f"{self.where}: {type(exc).__name__}: {exc}") from exc

    # -- payload indexes -------------------------------------------------------------------

    def _create_index(self, key: str, schema: str) -> None:
        self.client.create_payload_index(
            self.collection, field_name=json_path(key), field_schema=SCHEMAS[schema], wait=True
        )
        self.indexed.add(key)
        log.debug("%s: created %s payload index on %r", self.uri, schema, key)

    def _index_declared(self, metadata: list[dict]) -> None:
        for field in list(self.pending_indexes):
            value = next((m[field] for m in metadata if field in m), None)
            if value is None:
                continue
            key, schema = value_schema(field, value, DIALECT)
            if key not in self.indexed:
                self._create_index(key, schema)
            self.pending_indexes.remove(field)

    def _index_filtered(self, node: Node) -> None:
        if self.server:
            for key, schema in index_schema(node, DIALECT).items():
                if key not in self.indexed:
                    self._create_index(key, schema)

    # -- hooks -----------------------------------------------------------------------------

    def _upsert(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> int:
        payloads = [to_payload(i, m, False) for i, m in zip(ids, metadata, strict=True)]
        with self.guard():
            for start in range(0, len(ids), UPSERT_CHUNK):
                chunk = slice(start, start + UPSERT_CHUNK)
                batch = models.Batch(
                    ids=[point_id(i) for i in ids[chunk]],
                    vectors=vectors[chunk].tolist(),
                    payloads=payloads[chunk],
                )
                self.client.upsert(self.collection, points=batch, wait=True)
            self._index_declared(metadata)
        return len(ids)

    def _existing(self, ids: list[str]) -> list[str]:
        found = self.client.retrieve(
            self.collection, ids=[point_id(i) for i in ids], with_payload=False
        )
        return [str(p.id) for p in found]

    def _delete_ids(self, ids: list[str]) -> int:
        with self.guard():
            existing = self._existing(ids)
            if existing:
                selector = models.PointIdsList(points=existing)
                self.client.delete(self.collection, points_selector=selector, wait=True)
        return len(existing)

    def _delete_filter(self, node: Node) -> int:
        qfilter = translate(node, DIALECT)
        with self.guard():
            n = self.client.count(self.collection, count_filter=qfilter, exact=True).count
            if n:
                selector = models.FilterSelector(filter=qfilter)
                self.client.delete(self.collection, points_selector=selector, wait=True)
        return n

    def _fetch(self, ids: list[str]) -> list[Record]:
        with self.guard():
            points = self.client.retrieve(
                self.collection,
                ids=[point_id(i) for i in ids],
                with_payload=True,
                with_vectors=True,
            )
        by_id = {}
        for p in points:
            rid, meta = from_payload(p.payload)
            by_id[rid] = Record(rid, np.asarray(p.vector, dtype=np.float32), meta)
        return [by_id[i] for i in ids if i in by_id]

    def _search_excluding(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]],
    ) -> list[Hits]:
        """Excluded ids become a `must_not has_id` in each row's filter: one search at k."""
        qfilter = translate(node, DIALECT)
        ef, exact = search_options(params, self.default_ef)
        search = models.SearchParams(hnsw_ef=ef, exact=exact) if self.server else None
        requests = [
            models.QueryRequest(
                query=q.tolist(),
                limit=k,
                filter=leave_out(qfilter, ex, DIALECT),
                params=search,
                with_payload=True,
            )
            for q, ex in zip(queries, exclude, strict=True)
        ]
        with self.guard():
            if node is not None:
                self._index_filtered(node)
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [hits_from(r.points, self.metric == "l2") for r in responses]

    def _count(self, node: Node | None) -> int:
        with self.guard():
            if node is not None:
                self._index_filtered(node)
            result = self.client.count(
                self.collection, count_filter=translate(node, DIALECT), exact=True
            )
        return result.count

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()
