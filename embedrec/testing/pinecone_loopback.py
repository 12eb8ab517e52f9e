"""A loopback HTTP server that speaks the part of Pinecone's REST API that embedrec uses.

It answers the data-plane calls that pinecone SDK 10 makes (`POST /vectors/upsert`,
`POST /query`, `GET /vectors/fetch`, `POST /vectors/delete`, `POST /vectors/fetch_by_metadata`,
`GET /vectors/list`, `POST /describe_index_stats`) and the control-plane calls the store
makes (`GET/POST /indexes`, `GET/DELETE /indexes/{name}`), in the JSON shapes the SDK
decodes. Index `NAME` is served under the data-plane host `{url}/data/NAME`.

Every request is checked against Pinecone's documented limits: upsert <= 1,000 vectors and
<= 2 MB, metadata <= 40 KB per record of string, number, boolean or list-of-string values
(no null, no nesting), ids of 1-512 ASCII characters, top_k <= 10,000 (<= 1,000 with values
or metadata), fetch and delete <= 1,000 ids, and only Pinecone's filter operators with the
operand types it documents. A request that breaks one is answered 400, as Pinecone does, and
recorded in `violations`, so a test session can assert that the store never broke a limit.

Filters are evaluated with `embedrec.stores.filters.matches`: the store translates our
filter language into Pinecone's so that Pinecone's semantics give our answers, and the
translated filters use only constructs on which the two agree.

Faults: `inject(Fault(...))` answers the next matching requests with 429 / 503 or drops the
connection without an answer; `visibility_delay` makes upserted vectors visible to query,
fetch and stats only after that many seconds (Pinecone is eventually consistent).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

from embedrec.stores.filters import matches
from embedrec.testing.pinecone_limits import (
    DEFAULT_NAMESPACE,
    MAX_FETCH_BY_METADATA,
    MAX_IDS,
    MAX_LIST_LIMIT,
    MAX_TOP_K,
    MAX_TOP_K_WITH_DATA,
    MAX_UPSERT_BYTES,
    MAX_UPSERT_VECTORS,
    METRICS,
    LimitViolation,
    check_id,
    check_metadata,
    check_namespace,
    parse_request_filter,
)


@dataclass
class Fault:
    """Answer the next `times` requests whose path ends with `endpoint` (any when None)
    with `status`, or drop the connection without an answer when `status` is None."""

    status: int | None
    times: int = 1
    endpoint: str | None = None


@dataclass
class Logged:
    method: str
    endpoint: str
    body_bytes: int
    status: int


@dataclass
class _Version:
    values: np.ndarray
    metadata: dict[str, Any] | None
    visible_at: float
    previous: _Version | None = None

    def at(self, now: float) -> _Version | None:
        if self.visible_at <= now:
            return self
        return self.previous.at(now) if self.previous is not None else None


@dataclass
class _Index:
    name: str
    dimension: int
    metric: str
    cloud: str
    region: str
    namespaces: dict[str, dict[str, _Version]] = field(default_factory=dict)

    def visible(self, namespace: str, now: float) -> dict[str, _Version]:
        out = {}
        for vid, version in self.namespaces.get(namespace, {}).items():
            seen = version.at(now)
            if seen is not None:
                out[vid] = seen
        return out


# -- limit checks --------------------------------------------------------------------------


def _vector_json(vid: str, version: _Version, values: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": vid, "values": version.values.tolist() if values else []}
    if version.metadata:
        out["metadata"] = version.metadata
    return out


class LoopbackPinecone:
    """The server; `url` is the control-plane host, `data_host(name)` an index's host."""

    def __init__(self) -> None:
        self.indexes: dict[str, _Index] = {}
        self.violations: list[str] = []
        self.log: list[Logged] = []
        self.faults: list[Fault] = []
        self.visibility_delay = 0.0
        self.required_key: str | None = None
        """When set, any other Api-Key is answered 401."""
        self._lock = threading.RLock()
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def data_host(self, name: str) -> str:
        return f"{self.url}/data/{name}"

    def create_index(
        self, name: str, dimension: int, metric: str = "cosine", cloud="aws", region="us-east-1"
    ) -> None:
        with self._lock:
            self.indexes[name] = _Index(name, dimension, metric, cloud, region)

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def requests(self, endpoint: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.endpoint == endpoint]

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- dispatch ----------------------------------------------------------------------------

    def take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint is None or endpoint.endswith(fault.endpoint):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["data"] and len(parts) >= 3:
            index = self.indexes.get(parts[1])
            if index is None:
                return 404, {"code": 5, "message": f"index {parts[1]!r} not found", "details": []}
            endpoint = "/" + "/".join(parts[2:])
            try:
                return 200, self._data(index, method, endpoint, query, body)
            except LimitViolation as exc:
                with self._lock:
                    self.violations.append(f"{method} {endpoint}: {exc}")
                return 400, {"code": 3, "message": str(exc), "details": []}
        if parts[:1] == ["indexes"]:
            return self._control(method, parts[1:], body)
        return 404, {"error": {"code": "NOT_FOUND", "message": f"no route {path}"}, "status": 404}

    # -- control plane -----------------------------------------------------------------------

    def _model(self, index: _Index) -> dict[str, Any]:
        return {
            "name": index.name,
            "host": self.data_host(index.name),
            "status": {"ready": True, "state": "Ready"},
            "schema": {
                "fields": {
                    "_values": {
                        "type": "dense_vector",
                        "dimension": index.dimension,
                        "metric": index.metric,
                    }
                }
            },
            "deployment": {
                "deployment_type": "managed",
                "cloud": index.cloud,
                "region": index.region,
            },
            "deletion_protection": "disabled",
            "tags": None,
        }

    def _control(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        def not_found(name: str) -> tuple[int, Any]:
            msg = f"Resource {name} not found"
            return 404, {"error": {"code": "NOT_FOUND", "message": msg}, "status": 404}

        with self._lock:
            if method == "GET" and not parts:
                return 200, {"indexes": [self._model(i) for i in self.indexes.values()]}
            if method == "POST" and not parts:
                req = orjson.loads(body)
                name = req["name"]
                if name in self.indexes:
                    msg = f"Resource {name} already exists"
                    return 409, {"error": {"code": "ALREADY_EXISTS", "message": msg}, "status": 409}
                vec = req["schema"]["fields"]["_values"]
                dep = req.get("deployment") or {}
                if vec.get("metric", "cosine") not in METRICS:
                    msg = f"bad metric {vec.get('metric')!r}"
                    return 400, {
                        "error": {"code": "INVALID_ARGUMENT", "message": msg},
                        "status": 400,
                    }
                self.create_index(
                    name,
                    int(vec["dimension"]),
                    vec.get("metric", "cosine"),
                    dep.get("cloud", "aws"),
                    dep.get("region", "us-east-1"),
                )
                return 201, self._model(self.indexes[name])
            name = parts[0]
            if name not in self.indexes:
                return not_found(name)
            if method == "GET":
                return 200, self._model(self.indexes[name])
            if method == "DELETE":
                del self.indexes[name]
                return 202, None
        return 405, {"error": {"code": "INVALID_ARGUMENT", "message": method}, "status": 405}

    # -- data plane --------------------------------------------------------------------------

    def _data(
        self, index: _Index, method: str, endpoint: str, query: dict[str, list[str]], body: bytes
    ) -> Any:
        if endpoint == "/vectors/upsert" and len(body) > MAX_UPSERT_BYTES:
            raise LimitViolation(f"upsert body is {len(body)} bytes, over {MAX_UPSERT_BYTES}")
        req = orjson.loads(body) if body else {}
        if endpoint == "/vectors/upsert" and method == "POST":
            return self._upsert(index, req)
        if endpoint == "/query" and method == "POST":
            return self._query(index, req)
        if endpoint == "/vectors/fetch" and method == "GET":
            return self._fetch(index, query)
        if endpoint == "/vectors/delete" and method == "POST":
            return self._delete(index, req)
        if endpoint == "/vectors/fetch_by_metadata" and method == "POST":
            return self._fetch_by_metadata(index, req)
        if endpoint == "/vectors/list" and method == "GET":
            return self._list(index, query)
        if endpoint == "/describe_index_stats" and method == "POST":
            return self._stats(index, req)
        raise LimitViolation(f"unknown endpoint {method} {endpoint}")

    def _upsert(self, index: _Index, req: dict[str, Any]) -> Any:
        vectors = req.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise LimitViolation("upsert needs a non-empty list of vectors")
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise LimitViolation(f"upsert of {len(vectors)} vectors, over {MAX_UPSERT_VECTORS}")
        ns = check_namespace(req.get("namespace"))
        staged = []
        for pos, vec in enumerate(vectors):
            where = f"vectors[{pos}]"
            vid = check_id(vec.get("id"), where)
            values = vec.get("values")
            if not isinstance(values, list) or len(values) != index.dimension:
                raise LimitViolation(f"{where}: values must have dimension {index.dimension}")
            arr = np.asarray(values, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise LimitViolation(f"{where}: values must be finite")
            meta = vec.get("metadata")
            staged.append((vid, arr, None if meta is None else check_metadata(meta, where)))
        visible_at = time.monotonic() + self.visibility_delay
        with self._lock:
            space = index.namespaces.setdefault(ns, {})
            for vid, arr, meta in staged:
                space[vid] = _Version(arr, meta, visible_at, space.get(vid))
        return {"upsertedCount": len(staged)}

    def _query(self, index: _Index, req: dict[str, Any]) -> Any:
        top_k = req.get("topK")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise LimitViolation(f"topK must be 1..{MAX_TOP_K}, got {top_k!r}")
        with_values = bool(req.get("includeValues"))
        with_meta = bool(req.get("includeMetadata"))
        if (with_values or with_meta) and top_k > MAX_TOP_K_WITH_DATA:
            raise LimitViolation(
                f"topK {top_k} over {MAX_TOP_K_WITH_DATA} with includeValues/includeMetadata"
            )
        vector = req.get("vector")
        if not isinstance(vector, list) or len(vector) != index.dimension:
            raise LimitViolation(f"query vector must have dimension {index.dimension}")
        node = parse_request_filter(req.get("filter"))
        ns = check_namespace(req.get("namespace"))
        with self._lock:
            seen = index.visible(ns, time.monotonic())
        items = [(k, v) for k, v in seen.items() if node is None or matches(v.metadata, node)]
        matches_out: list[dict[str, Any]] = []
        if items:
            q = np.asarray(vector, dtype=np.float32)
            mat = np.stack([v.values for _, v in items])
            if index.metric == "euclidean":
                scores = ((mat - q) ** 2).sum(axis=1)
                order = np.argsort(scores, kind="stable")
            else:
                if index.metric == "cosine":
                    mat = mat / np.linalg.norm(mat, axis=1, keepdims=True)
                    q = q / np.linalg.norm(q)
                scores = mat @ q
                order = np.argsort(-scores, kind="stable")
            for i in order[:top_k]:
                vid, version = items[i]
                hit: dict[str, Any] = {"id": vid, "score": float(scores[i])}
                if with_values:
                    hit["values"] = version.values.tolist()
                if with_meta and version.metadata:
                    hit["metadata"] = version.metadata
                matches_out.append(hit)
        name = "" if ns == DEFAULT_NAMESPACE else ns
        return {"matches": matches_out, "namespace": name, "usage": {"readUnits": 1}}

    def _ids(self, ids: Any) -> list[str]:
        if not isinstance(ids, list) or not ids:
            raise LimitViolation("ids must be a non-empty list")
        if len(ids) > MAX_IDS:
            raise LimitViolation(f"{len(ids)} ids, over {MAX_IDS}")
        return [check_id(v, f"ids[{i}]") for i, v in enumerate(ids)]

    def _fetch(self, index: _Index, query: dict[str, list[str]]) -> Any:
        ids = self._ids(query.get("ids"))
        ns = check_namespace((query.get("namespace") or [""])[0])
        with self._lock:
            seen = index.visible(ns, time.monotonic())
        vectors = {vid: _vector_json(vid, seen[vid]) for vid in ids if vid in seen}
        name = "" if ns == DEFAULT_NAMESPACE else ns
        return {"vectors": vectors, "namespace": name, "usage": {"readUnits": 1}}

    def _delete(self, index: _Index, req: dict[str, Any]) -> Any:
        ns = check_namespace(req.get("namespace"))
        selectors = [k for k in ("ids", "deleteAll", "filter") if req.get(k) not in (None, False)]
        if len(selectors) != 1:
            raise LimitViolation(f"delete takes exactly one of ids/deleteAll/filter: {selectors}")
        with self._lock:
            space = index.namespaces.get(ns, {})
            if "ids" in req:
                for vid in self._ids(req["ids"]):
                    space.pop(vid, None)
            elif req.get("deleteAll"):
                index.namespaces.pop(ns, None)
            else:
                node = parse_request_filter(req["filter"])
                seen = index.visible(ns, time.monotonic())
                for vid, version in seen.items():
                    if matches(version.metadata, node):
                        space.pop(vid, None)
        return {}

    def _fetch_by_metadata(self, index: _Index, req: dict[str, Any]) -> Any:
        node = parse_request_filter(req.get("filter"))
        if node is None:
            raise LimitViolation("fetch_by_metadata needs a filter")
        limit = req.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_FETCH_BY_METADATA:
            raise LimitViolation(f"limit must be 1..{MAX_FETCH_BY_METADATA}, got {limit!r}")
        ns = check_namespace(req.get("namespace"))
        start = int(req.get("paginationToken") or 0)
        with self._lock:
            seen = index.visible(ns, time.monotonic())
        hits = sorted(vid for vid, v in seen.items() if matches(v.metadata, node))
        page = hits[start : start + limit]
        out: dict[str, Any] = {
            "vectors": {vid: _vector_json(vid, seen[vid]) for vid in page},
            "namespace": "" if ns == DEFAULT_NAMESPACE else ns,
            "usage": {"readUnits": 1},
        }
        if start + limit < len(hits):
            out["pagination"] = {"next": str(start + limit)}
        return out

    def _list(self, index: _Index, query: dict[str, list[str]]) -> Any:
        limit = int((query.get("limit") or ["100"])[0])
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise LimitViolation(f"list limit must be 1..{MAX_LIST_LIMIT}, got {limit}")
        ns = check_namespace((query.get("namespace") or [""])[0])
        prefix = (query.get("prefix") or [""])[0]
        start = int((query.get("paginationToken") or ["0"])[0])
        with self._lock:
            ids = sorted(v for v in index.visible(ns, time.monotonic()) if v.startswith(prefix))
        out: dict[str, Any] = {
            "vectors": [{"id": v} for v in ids[start : start + limit]],
            "namespace": "" if ns == DEFAULT_NAMESPACE else ns,
        }
        if start + limit < len(ids):
            out["pagination"] = {"next": str(start + limit)}
        return out

    def _stats(self, index: _Index, req: dict[str, Any]) -> Any:
        if req.get("filter") is not None:
            raise LimitViolation("serverless indexes do not take a filter in describe_index_stats")
        now = time.monotonic()
        with self._lock:
            counts = {ns: len(index.visible(ns, now)) for ns in index.namespaces}
        counts = {ns: n for ns, n in counts.items() if n}
        return {
            "namespaces": {ns: {"vectorCount": n} for ns, n in counts.items()},
            "dimension": index.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(counts.values()),
            "metric": index.metric,
            "vectorType": "dense",
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)
    server_state: LoopbackPinecone

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        endpoint = "/" + "/".join(parts[2:] if parts[:1] == ["data"] else parts)
        fault = state.take_fault(endpoint)
        if fault is not None and fault.status is None:
            with state._lock:
                state.log.append(Logged(self.command, endpoint, len(body), 0))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            status, payload = fault.status, {"code": 14, "message": "injected fault", "details": []}
        elif state.required_key is not None and self.headers.get("Api-Key") != state.required_key:
            status, payload = (
                401,
                {"error": {"code": "UNAUTHENTICATED", "message": "Invalid API Key"}},
            )
        elif not self.headers.get("Api-Key"):
            status, payload = 401, {"error": {"code": "UNAUTHENTICATED", "message": "No API key"}}
        else:
            status, payload = state.handle(self.command, url.path, parse_qs(url.query), body)
        with state._lock:
            state.log.append(Logged(self.command, endpoint, len(body), status))
        data = b"" if payload is None else orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve
