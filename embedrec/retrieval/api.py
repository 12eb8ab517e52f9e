"""The HTTP service: `create_app(recommender)`, served by `embedrec serve CONFIG`.

Data endpoints (`/similar`, `/recommend`, `/search`, `/search/image`) need the API key when
one is set (`api_key`, else `EMBEDREC_API_KEY`), as `X-API-Key: KEY` or `Authorization:
Bearer KEY`; `/healthz`, `/metrics` and the OpenAPI docs (`/docs`, `/openapi.json`) are open.

Client input never causes a 5xx: bad fields are 422 (request validation), a bad filter,
image or query 400, an unknown item 404, a body over its limit 413. 503 means a store
(and its replica, if any) is unavailable.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import io
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedrec.retrieval.client import ItemNotFound, Recommender, Results
from embedrec.stores.errors import StoreUnavailable

MAX_K = 1_000
MAX_TEXT = 10_000
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_JSON_BODY = 1024 * 1024
MAX_ID = 512
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DATA_PATHS = ("/similar", "/recommend", "/search", "/search/image")


# -- request and response bodies -----------------------------------------------------------

Filter = Annotated[
    dict[str, Any] | None,
    Field(
        description='Metadata filter, e.g. {"genres": {"$in": ["Comedy"]}, '
        '"year": {"$gte": 1990}}; operators $eq $ne $gt $gte $lt $lte $in $nin $exists, '
        "$and / $or",
    ),
]
K = Annotated[int, Field(ge=1, le=MAX_K, description=f"results wanted, 1..{MAX_K}")]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimilarRequest(Body):
    item_id: Id
    k: K = 10
    filter: Filter = None
    space: Annotated[str, Field(pattern="^(text|image|two-tower)$")] | None = None


class UserFeatures(Body):
    age: Annotated[int, Field(ge=0, le=150)]
    gender: Annotated[str, Field(min_length=1, max_length=64)]
    occupation: Annotated[str, Field(min_length=1, max_length=128)]


class RecommendRequest(Body):
    user_id: Id
    k: K = 10
    exclude_seen: bool = True
    filter: Filter = None
    features: UserFeatures | None = Field(
        None, description="for a user the service does not know: the feature-only tower"
    )


class SearchRequest(Body):
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    k: K = 10
    filter: Filter = None


class HitOut(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any] | None = None


class ResultsOut(BaseModel):
    source: str = Field(
        description="what answered: the space searched, or for /recommend 'two-tower', "
        "'features' (a new user's feature-only vector) or 'popularity'"
    )
    results: list[HitOut]


class Problem(BaseModel):
    detail: Any


def _payload(results: Results) -> bytes:
    """The `ResultsOut` body, serialised straight from the hits' columns: building and
    re-validating a pydantic model per hit cost more than the search itself."""
    hits = results.hits
    return orjson.dumps(
        {
            "source": results.source,
            "results": [
                {"id": i, "score": s, "metadata": m}
                for i, s, m in zip(hits.ids, hits.scores, hits.metadata, strict=True)
            ],
        }
    )


def _out(results: Results) -> Response:
    return Response(_payload(results), media_type="application/json")


# -- metrics ---------------------------------------------------------------------------------


class Metrics:
    """Request latency histograms and counts, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, list[int]] = {}
        self._sum: Counter[str] = Counter()
        self._requests: Counter[tuple[str, int]] = Counter()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            counts = self._buckets.setdefault(endpoint, [0] * (len(BUCKETS) + 1))
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self._sum[endpoint] += seconds
            self._requests[(endpoint, status)] += 1

    def render(self, fallbacks: dict[tuple[str, str], int]) -> str:
        lines = [
            "# HELP embedrec_request_duration_seconds Time to answer a request, by endpoint.",
            "# TYPE embedrec_request_duration_seconds histogram",
        ]
        with self._lock:
            for endpoint, counts in sorted(self._buckets.items()):
                total = 0
                for edge, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                    total += n
                    lines.append(
                        f'embedrec_request_duration_seconds_bucket{{endpoint="{endpoint}",'
                        f'le="{edge}"}} {total}'
                    )
                lines.append(
                    f'embedrec_request_duration_seconds_sum{{endpoint="{endpoint}"}} '
                    f"{self._sum[endpoint]:.6f}"
                )
                lines.append(
                    f'embedrec_request_duration_seconds_count{{endpoint="{endpoint}"}} {total}'
                )
            lines += [
                "# HELP embedrec_requests_total Requests answered, by endpoint and status.",
                "# TYPE embedrec_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self._requests.items()):
                lines.append(
                    f'embedrec_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}'
                )
        lines += [
            "# HELP embedrec_store_fallbacks_total Store calls served by a replica.",
            "# TYPE embedrec_store_fallbacks_total counter",
        ]
        for (space, op), n in sorted(fallbacks.items()):
            lines.append(f'embedrec_store_fallbacks_total{{space="{space}",operation="{op}"}} {n}')
        return "\n".join(lines) + "\n"


def _has_key(headers: dict[bytes, bytes], api_key: bytes) -> bool:
    """Whether the request carries the API key, as X-API-Key or Authorization: Bearer."""
    given = headers.get(b"x-api-key")
    if not given:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        given = token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return given is not None and hmac.compare_digest(given, api_key)


Lean = Callable[[bytes], Awaitable[bytes]]
"""A lean route's handler: the request body in, the JSON response body out."""
JSON_HEADERS = [(b"content-type", b"application/json")]


class _Gate:
    """ASGI middleware in front of every route: times and counts each request, checks the
    API key on the data paths, and refuses bodies over their limit (by Content-Length up
    front, else while the body streams in). The key is checked here rather than by a FastAPI
    dependency, which cost more per request than a whole FAISS search.

    It also answers the lean routes (`/similar`, `/recommend`) itself: the body read, the
    handler called, its JSON sent, and its errors answered by the app's own exception
    handlers, without Starlette's router, request and response objects or FastAPI's
    middleware: that saved about 110 us of the server's 530 us of CPU per `/recommend`."""

    def __init__(
        self,
        app: Any,
        metrics: Metrics,
        paths: set[str],
        api_key: str | None,
        lean: dict[str, Lean],
        handlers: dict[Any, Callable[..., Any]],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths
        self.api_key = api_key.encode() if api_key else None
        self.lean = lean
        self.handlers = handlers

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in self.paths else "other"
        limit = MAX_IMAGE_BYTES + 64 * 1024 if path == "/search/image" else MAX_JSON_BODY
        status = 500
        received = 0

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body over {limit:,} bytes")
            return message

        try:
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length", b"")
            if self.api_key and path in DATA_PATHS and not _has_key(headers, self.api_key):
                response = JSONResponse(
                    {
                        "detail": "missing or wrong API key: send it as X-API-Key or "
                        "Authorization: Bearer"
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send_status)
            elif declared.isdigit() and int(declared) > limit:
                response = JSONResponse(
                    {"detail": f"request body of {int(declared):,} bytes is over {limit:,}"},
                    status_code=413,
                )
                await response(scope, receive, send_status)
            elif path in self.lean:
                await self._answer(self.lean[path], scope, limited_receive, send_status)
            else:
                await self.app(scope, limited_receive, send_status)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - started)

    async def _answer(self, handler: Lean, scope: dict, receive: Any, send: Any) -> None:
        try:
            if scope["method"] != "POST":
                raise HTTPException(405, headers={"Allow": "POST"})
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
            payload = await handler(body)
        except Exception as exc:
            handle = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if handle is None:
                raise
            response = await handle(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


# -- the app ---------------------------------------------------------------------------------


BodyModel = TypeVar("BodyModel", bound=Body)
SELF_PARSED: dict[str, type[Body]] = {"/similar": SimilarRequest, "/recommend": RecommendRequest}
"""The lean routes, which `_Gate` answers, and the bodies they parse themselves."""


INVALID = {
    "description": "Validation Error",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
    },
}
"""422 as FastAPI documents it for the routes whose bodies it parses."""


def _body(model: type[Body]) -> dict[str, Any]:
    """OpenAPI for a JSON body the endpoint parses itself; `_openapi` adds its schema."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _parse(body: bytes, model: type[BodyModel]) -> BodyModel:
    """The body validated by pydantic-core straight from its bytes, with FastAPI's 422 on
    bad input: the lean routes skip FastAPI's body and dependency machinery, which cost
    several times a FAISS search per request."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for e in errors:
            e["loc"] = ("body", *e["loc"])
            if isinstance(e.get("input"), bytes):  # a body that is not JSON, maybe not UTF-8
                e["input"] = e["input"].decode(errors="replace")
        raise RequestValidationError(errors) from None


def _image_bytes(upload: UploadFile) -> bytes:
    data = upload.file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise HTTPException(413, f"image over {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    if not data:
        raise HTTPException(400, "empty image upload")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"cannot decode the image: {exc}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise HTTPException(
            400, f"image is {width}x{height}; at most {MAX_IMAGE_PIXELS:,} pixels are accepted"
        )
    return data


def _json_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise HTTPException(400, f"filter is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"filter must be a JSON object, got {type(value).__name__}")
    return value


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On start, move everything built so far (stores' metadata, the model, the catalog) out
    of the cyclic GC's reach: it lives as long as the process, and a full collection that
    walks it stalls every request in flight (240 ms over MovieLens, its model and stores)."""
    gc.freeze()
    yield


def create_app(recommender: Recommender, api_key: str | None = None) -> FastAPI:
    """The service over `recommender`. `api_key` defaults to `$EMBEDREC_API_KEY`; when
    neither is set the data endpoints are open."""
    api_key = api_key or os.environ.get("EMBEDREC_API_KEY") or None
    metrics = Metrics()
    app = FastAPI(
        lifespan=_lifespan,
        title="embedrec",
        version="0.1.0",
        description="Similar items, recommendations and search over vector stores. "
        + ("Data endpoints need the API key." if api_key else "No API key is required."),
    )
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem} for code in (400, 401, 404, 413, 503)
    }

    @app.exception_handler(ItemNotFound)
    async def _not_found(request: Request, exc: ItemNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ValueError)
    async def _bad_input(request: Request, exc: ValueError) -> JSONResponse:
        # FilterError, InputError (a bad image or text), SpaceNotConfigured and the stores'
        # other input errors are all ValueErrors that describe what to fix
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def answer(
        space: str | None, fn: Callable[..., Results], /, *args: Any, **kw: Any
    ) -> bytes:
        """`fn` on the event loop where the space's stores are in process (a search there is
        shorter than a thread hop), in a worker thread where one waits on the network."""
        if recommender.is_remote(space):
            return _payload(await run_in_threadpool(fn, *args, **kw))
        return _payload(fn(*args, **kw))

    async def similar(body: bytes) -> bytes:
        """Items nearest a catalog item (itself left out)."""
        req = _parse(body, SimilarRequest)
        space = req.space or recommender.similar_space
        return await answer(
            space, recommender.similar, req.item_id, req.k, req.filter, space=req.space
        )

    async def recommend(body: bytes) -> bytes:
        """Items for a user: their two-tower vector; a new user's features; else popularity."""
        req = _parse(body, RecommendRequest)
        features = req.features.model_dump() if req.features is not None else None
        return await answer(
            "two-tower",
            recommender.recommend,
            req.user_id,
            req.k,
            exclude_seen=req.exclude_seen,
            filter=req.filter,
            features=features,
        )

    @app.post("/search", response_model=ResultsOut, responses=errors)
    def search(req: SearchRequest) -> Any:
        """Items whose text is nearest the query text."""
        return _out(recommender.search_text(req.text, req.k, req.filter))

    @app.post("/search/image", response_model=ResultsOut, responses=errors)
    def search_image(
        file: Annotated[UploadFile, File(description="the query image (PNG, JPEG, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        filter: Annotated[str | None, Form(description="a filter as a JSON object")] = None,
    ) -> Any:
        """Items whose image is nearest the uploaded one; at most 10 MB."""
        data = _image_bytes(file)
        return _out(recommender.search_image(data, k, _json_filter(filter)))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "spaces": recommender.store_uris()}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(recommender.fallback_counts()),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    # The hot path: `_Gate` answers these routes. FastAPI documents them from APIRoutes
    # that are not mounted.
    handlers: dict[str, Lean] = {"/similar": similar, "/recommend": recommend}
    lean = [
        APIRoute(
            path,
            _answered_by_the_gate,
            name=handlers[path].__name__,
            description=handlers[path].__doc__ or "",
            methods=["POST"],
            response_model=ResultsOut,
            responses=errors | {422: INVALID},
            openapi_extra=_body(model),
        )
        for path, model in SELF_PARSED.items()
    ]
    paths = {*DATA_PATHS, "/healthz", "/metrics", "/openapi.json", "/docs"}
    app.add_middleware(
        _Gate,
        metrics=metrics,
        paths=paths,
        api_key=api_key,
        lean=handlers,
        handlers=app.exception_handlers,
    )
    app.openapi = lambda: _openapi(app, lean, api_key is not None)  # type: ignore[method-assign]
    return app


def _answered_by_the_gate() -> None:
    """The endpoint of the lean routes' documentation, which is never mounted."""


def _openapi(app: FastAPI, lean: list[APIRoute], keyed: bool) -> dict[str, Any]:
    """FastAPI's schema plus what it cannot see: the lean routes, the bodies `_parse`
    validates and, with a key, that the data endpoints take it (which `_Gate` checks) as
    X-API-Key or bearer."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=[*app.routes, *lean],
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in SELF_PARSED.values():
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs", {}))
            schemas[model.__name__] = body
        if keyed:
            components["securitySchemes"] = {
                "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "HTTPBearer": {"type": "http", "scheme": "bearer"},
            }
            for path in DATA_PATHS:
                for operation in schema["paths"].get(path, {}).values():
                    operation["security"] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema
