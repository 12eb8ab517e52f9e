"""Qdrant through qdrant-client 1.20: a server, or the client's local mode.

- `qdrant://host:6333/collection`: a Qdrant server (REST; `?grpc=1` for gRPC on
  `grpc_port`, default 6334; `?https=1` for TLS). The API key comes from `QDRANT_API_KEY`.
  Creation options: `m`, `ef_construct` (HNSW), `on_disk` (vectors, graph and payload on
  disk), `shard_number`, `replication_factor` (clusters). `ef` sets the default search ef;
  `timeout` (seconds, default 10) bounds every request, and a server that is down or slower
  than that raises `StoreUnavailable` naming its URL. `indexes=genre,year` creates payload
  indexes on those fields (see store.py for the others).
- `qdrant+local:PATH/collection` and `qdrant+memory:collection`: qdrant-client's local
  mode, the same API run in Python. For tests and development only: search is brute force
  (exact) and filters are evaluated point by point, fine up to about 20,000 points; it has
  no HNSW, shards or payload indexes, so it takes none of the options above. A local path
  is held by one client at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreUnavailable,
)
from embedrec.stores.qdrant.dialect import Dialect, indexed_keys, json_path
from embedrec.stores.qdrant.store import QdrantStore
from embedrec.stores.uri import StoreURI

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
SERVER_OPTIONS = ("m", "ef_construct", "on_disk", "shard_number", "replication_factor")
STORE_OPTIONS = ("ef", "indexes")
INFO_KEY = "embedrec_store_info"
"""The collection metadata key under which the store info is kept."""


def _grpc_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in (  # type: ignore[attr-defined]
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def aliased(client: QdrantClient, name: str) -> str | None:
    """The collection the alias `name` points at, None when `name` is no alias."""
    for alias in client.get_aliases().aliases:
        if alias.alias_name == name:
            return alias.collection_name
    return None


class ClientEngine:
    """One collection through qdrant-client: a server (HNSW) or local mode (brute force)."""

    dialect = DIALECT
    upsert_chunk = 256
    stale_graph = False

    def __init__(self, client: QdrantClient, collection: str, where: str, server: bool) -> None:
        self.client = client
        self.collection = collection
        self.where = where
        self.ann = self.remote = server
        self.persistent = True
        self.timeout = 0
        self.config: dict[str, Any] = {}
        self.dim, self.metric = 0, "cosine"
        self.hnsw_m, self.default_ef = 16, 100
        self._payload_schema: dict[str, Any] = {}
        self._info_text: Any = None

    @classmethod
    def connect(cls, uri: StoreURI) -> ClientEngine:
        return cls._server(uri) if uri.scheme == "qdrant" else cls._local(uri)

    @classmethod
    def _server(cls, uri: StoreURI) -> ClientEngine:
        parts = urlsplit(f"//{uri.location}")
        collection = parts.path.strip("/")
        if not parts.hostname or not collection or "/" in collection:
            raise ConfigError(f"{uri.raw}: expected qdrant://host:port/collection")
        try:
            port = parts.port or 6333
        except ValueError:
            raise ConfigError(f"{uri.raw}: bad port in {uri.location!r}") from None
        https, grpc = uri.pop_bool("https"), uri.pop_bool("grpc")
        grpc_port = uri.pop_int("grpc_port", 6334)
        timeout = uri.pop_int("timeout", 10)
        if timeout is None or timeout < 1:
            raise ConfigError(f"{uri.raw}: timeout must be a positive number of seconds")
        url = f"{'https' if https else 'http'}://{parts.hostname}:{port}"
        client = QdrantClient(
            url=url,
            grpc_port=grpc_port,
            prefer_grpc=grpc,
            api_key=os.environ.get("QDRANT_API_KEY") or None,
            timeout=timeout,
            check_compatibility=False,
        )
        where = f"Qdrant at {url}" + (f" (gRPC port {grpc_port})" if grpc else "")
        engine = cls(client, collection, where, server=True)
        engine.timeout = timeout
        engine.config = {
            "m": uri.pop_int("m"),
            "ef_construct": uri.pop_int("ef_construct"),
            "on_disk": uri.pop_bool("on_disk") if "on_disk" in uri.options else None,
            "shard_number": uri.pop_int("shard_number"),
            "replication_factor": uri.pop_int("replication_factor"),
        }
        return engine

    @classmethod
    def _local(cls, uri: StoreURI) -> ClientEngine:
        given = sorted(set(uri.options) & {*SERVER_OPTIONS, *STORE_OPTIONS, "grpc", "timeout"})
        if given:
            raise ConfigError(
                f"{uri.raw}: option(s) {', '.join(given)} apply to a Qdrant server only; "
                f"{uri.scheme} is qdrant-client's brute-force local mode"
            )
        if uri.scheme == "qdrant+memory":
            if not uri.location or "/" in uri.location:
                raise ConfigError(f"{uri.raw}: expected qdrant+memory:collection")
            client = QdrantClient(location=":memory:")
            engine = cls(client, uri.location, "in-memory Qdrant", server=False)
            engine.persistent = False
            return engine
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
        return cls(client, collection, f"local Qdrant at {path}", server=False)

    def attach(self, uri: str, dim: int | None, metric: str | None) -> None:
        """An alias (aliases.py) opens the collection it points at now, and stays on it."""
        self.collection = aliased(self.client, self.collection) or self.collection
        if not self.client.collection_exists(self.collection):
            if dim is None:
                raise StoreNotFound(
                    f"{uri}: collection {self.collection!r} does not exist in {self.where}; "
                    "pass dim to create it"
                )
            self.dim, self.metric = dim, metric or "cosine"
            self._create()
        info = self.client.get_collection(self.collection)
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise ConfigError(
                f"{uri}: collection {self.collection!r} has named vectors; "
                "embedrec stores use one unnamed vector"
            )
        stored = next((k for k, v in DISTANCES.items() if v == params.distance), None)
        if stored is None:
            raise ConfigError(
                f"{uri}: collection uses distance {params.distance}, which embedrec "
                "does not support"
            )
        if dim is not None and dim != params.size:
            raise DimensionError(f"{uri}: collection has dimension {params.size}, asked for {dim}")
        if metric is not None and metric != stored:
            raise ConfigError(f"{uri}: collection uses metric {stored}, asked for {metric}")
        self.dim, self.metric = params.size, stored
        hnsw = info.config.hnsw_config
        self.hnsw_m, self.default_ef = hnsw.m or 16, hnsw.ef_construct or 100
        self._payload_schema = info.payload_schema or {}
        self._info_text = (info.config.metadata or {}).get(INFO_KEY)

    def _create(self) -> None:
        config = self.config or dict.fromkeys(SERVER_OPTIONS)
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

    def read_info(self) -> dict[str, Any] | None:
        if self._info_text is None:
            return None
        try:
            return json.loads(self._info_text)
        except (TypeError, ValueError) as exc:
            raise CorruptStore(f"{self.where}: unreadable store info metadata: {exc}") from None

    def write_info(self, raw: dict[str, Any]) -> None:
        """Kept in the collection's metadata under one key, beside any the user set, as JSON
        text: Qdrant merges metadata updates into what is stored, and a text value is
        replaced whole where a nested object could keep keys of an older description.
        qdrant-client's local mode persists it too."""
        text = json.dumps(raw, sort_keys=True)
        self.client.update_collection(self.collection, metadata={INFO_KEY: text})
        self._info_text = text

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Transport failures become StoreUnavailable, server refusals StoreError."""
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

    # -- points ----------------------------------------------------------------------------

    def upsert(self, ids: list[str], rows: list[list[float]], payloads: list[dict]) -> None:
        """Every chunk is built (and so validated by the client's models) before the first
        is sent."""
        n = self.upsert_chunk
        batches = [
            models.Batch(ids=ids[s : s + n], vectors=rows[s : s + n], payloads=payloads[s : s + n])
            for s in range(0, len(ids), n)
        ]
        for batch in batches:
            self.client.upsert(self.collection, points=batch, wait=True)

    def retrieve(self, ids: list[str], with_data: bool) -> list[Any]:
        return self.client.retrieve(
            self.collection, ids=ids, with_payload=with_data, with_vectors=with_data
        )

    def scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        return self.client.scroll(
            self.collection, limit=limit, offset=offset, with_payload=True, with_vectors=False
        )

    def delete(self, ids: list[Any]) -> None:
        selector = models.PointIdsList(points=ids)
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def delete_filter(self, qfilter: Any) -> None:
        selector = models.FilterSelector(filter=qfilter)
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def count(self, qfilter: Any) -> int:
        return self.client.count(self.collection, count_filter=qfilter, exact=True).count

    def query(
        self,
        vectors: list[list[float]],
        filters: Sequence[Any],
        k: int,
        ef: int | None,
        exact: bool,
    ) -> list[list[Any]]:
        search = models.SearchParams(hnsw_ef=ef, exact=exact) if self.ann else None
        requests = [
            models.QueryRequest(query=v, limit=k, filter=f, params=search, with_payload=True)
            for v, f in zip(vectors, filters, strict=True)
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [r.points for r in responses]

    # -- payload indexes and the graph -----------------------------------------------------

    def indexed(self) -> set[str]:
        return indexed_keys(self._payload_schema)

    def create_index(self, key: str, schema: str) -> None:
        self.client.create_payload_index(
            self.collection, field_name=json_path(key), field_schema=SCHEMAS[schema], wait=True
        )

    def rebuild(self) -> None:
        """Nothing to do: a server's optimizer owns its segments (an index created late gets
        graph links in the segments it rebuilds later; the store's exact fallback covers the
        rest), and local mode has no graph."""

    def flush(self) -> None:
        """Every write already waited for the server (`wait=True`)."""

    def close(self) -> None:
        self.client.close()


class QdrantClientStore(QdrantStore):
    """`qdrant://`, `qdrant+local:` and `qdrant+memory:` stores."""

    engine_type = ClientEngine
