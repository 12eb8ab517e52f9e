"""The HTTP service: `create_app(recommender)`, served by `embedrec serve CONFIG`.

Data endpoints (`/similar`, `/recommend`, `/search`, `/search/image`) need the API key when
one is set (`api_key`, else `EMBEDREC_API_KEY`), as `X-API-Key: KEY` or `Authorization:
Bearer KEY`; `/healthz`, `/metrics` and the OpenAPI docs (`/docs`, `/openapi.json`) are open.

Client input never causes a 5xx: bad fields are 422 (request validation), a bad filter,
image or query 400, an unknown item 404, a body over its limit 413. 503 means a store
(and its replica, if any) is unavailable.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import threading
import time
from collections import Counter
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

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


def _out(results: Results) -> ResultsOut:
    return ResultsOut(
        source=results.source,
        results=[HitOut(id=h.id, score=h.score, metadata=h.metadata) for h in results.hits],
    )


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


class _Instrument:
    """ASGI middleware: times and counts every request, and refuses bodies over their limit
    (by Content-Length up front, else while the body streams in)."""

    def __init__(self, app: Any, metrics: Metrics, paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

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
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                response = JSONResponse(
                    {"detail": f"request body of {int(declared):,} bytes is over {limit:,}"},
                    status_code=413,
                )
                await response(scope, receive, send_status)
            else:
                await self.app(scope, limited_receive, send_status)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - started)


# -- the app ---------------------------------------------------------------------------------


API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
BEARER = HTTPBearer(auto_error=False, description="the API key as a bearer token")


def _auth(api_key: str | None) -> Any:
    def check(
        key: Annotated[str | None, Security(API_KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        if api_key is None:
            return
        given = key or (token.credentials if token is not None else None)
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


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


def create_app(recommender: Recommender, api_key: str | None = None) -> FastAPI:
    """The service over `recommender`. `api_key` defaults to `$EMBEDREC_API_KEY`; when
    neither is set the data endpoints are open."""
    api_key = api_key or os.environ.get("EMBEDREC_API_KEY") or None
    metrics = Metrics()
    app = FastAPI(
        title="embedrec",
        version="0.1.0",
        description="Similar items, recommendations and search over vector stores. "
        + ("Data endpoints need the API key." if api_key else "No API key is required."),
    )
    auth = [Depends(_auth(api_key))]
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

    @app.post("/similar", response_model=ResultsOut, responses=errors, dependencies=auth)
    def similar(req: SimilarRequest) -> ResultsOut:
        """Items nearest a catalog item (itself left out)."""
        return _out(recommender.similar(req.item_id, req.k, req.filter, space=req.space))

    @app.post("/recommend", response_model=ResultsOut, responses=errors, dependencies=auth)
    def recommend(req: RecommendRequest) -> ResultsOut:
        """Items for a user: their two-tower vector; a new user's features; else popularity."""
        features = req.features.model_dump() if req.features is not None else None
        return _out(
            recommender.recommend(
                req.user_id,
                req.k,
                exclude_seen=req.exclude_seen,
                filter=req.filter,
                features=features,
            )
        )

    @app.post("/search", response_model=ResultsOut, responses=errors, dependencies=auth)
    def search(req: SearchRequest) -> ResultsOut:
        """Items whose text is nearest the query text."""
        return _out(recommender.search_text(req.text, req.k, req.filter))

    @app.post("/search/image", response_model=ResultsOut, responses=errors, dependencies=auth)
    def search_image(
        file: Annotated[UploadFile, File(description="the query image (PNG, JPEG, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        filter: Annotated[str | None, Form(description="a filter as a JSON object")] = None,
    ) -> ResultsOut:
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

    paths = {*DATA_PATHS, "/healthz", "/metrics", "/openapi.json", "/docs"}
    app.add_middleware(_Instrument, metrics=metrics, paths=paths)
    return app
