"""The service's routes, each declared once as a FastAPI route on the app: the data routes
(which need the API key where one is set; the JSON ones are `JSONRoute`s), the operational
ones (`/healthz`, `/metrics`) and the admin one (`POST /admin/reload`, which always needs
the key)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer

from embedrec.embedders.two_tower.features import FeatureError
from embedrec.retrieval.api.batching import RecommendBatcher
from embedrec.retrieval.api.bodies import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_K,
    EventsOut,
    EventsRequest,
    HistoryOut,
    HistoryRequest,
    JSONBytes,
    Problem,
    RecommendRequest,
    ResultsOut,
    SearchRequest,
    SimilarRequest,
    results_body,
)
from embedrec.retrieval.api.errors import DOCUMENTED
from embedrec.retrieval.api.json_route import JSONRoute
from embedrec.retrieval.api.metrics import ServiceMetrics
from embedrec.retrieval.client import Recommender, Results
from embedrec.retrieval.live.service import Live
from embedrec.retrieval.reload import Reloader

DATA = "data"
"""The tag of the routes that need the API key where one is set."""
ADMIN = "admin"
"""The tag of the routes that change what the service serves: they need the API key, and
where none is set they refuse everyone (an open service must not be reloadable by anyone)."""
NO_ADMIN = {
    "detail": "no API key is set, so admin routes are off: set EMBEDREC_API_KEY to use them"
}

KEY_SCHEMES = [
    Security(APIKeyHeader(name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False)),
    Security(HTTPBearer(scheme_name="HTTPBearer", auto_error=False)),
]
"""How the data routes take the key, for the OpenAPI schema; the `ApiKey` middleware checks
it, before the body is read."""

Endpoint = Callable[..., Any]


def add_data_routes(app: FastAPI, recommender: Recommender, keyed: bool) -> None:
    common: dict[str, Any] = {
        "methods": ["POST"],
        "response_model": ResultsOut,
        "response_class": JSONBytes,
        "responses": DOCUMENTED,
        "tags": [DATA],
        "dependencies": KEY_SCHEMES if keyed else None,
    }
    answer = _answerer(recommender)
    json_routes = {
        "/similar": _similar(recommender, answer),
        "/recommend": _recommend(recommender, RecommendBatcher(recommender)),
        "/search": _search(recommender),
    }
    for path, endpoint in json_routes.items():
        app.router.add_api_route(path, endpoint, route_class_override=JSONRoute, **common)
    app.router.add_api_route("/search/image", _search_image(recommender), **common)


def add_event_routes(app: FastAPI, live: Live, keyed: bool) -> None:
    def events(req: EventsRequest) -> Response:
        """Users' interactions and catalogue changes (see docs/realtime.md). 202 with how many
        were accepted and each rejected one's reason; without Redis they are applied before
        the answer, with Redis appended to the stream that the consumers apply. 503 when
        that cannot be done now."""
        return JSONBytes(live.accept(req.events).to_json(), status_code=202)

    def history(req: HistoryRequest) -> Response:
        """A user's live history: the interactions that arrived as events, oldest first."""
        read = live.histories.read([req.user_id])
        entries = read.entries.get(req.user_id, [])
        body = {"user_id": req.user_id, "available": not read.unavailable}
        body["live"] = [{"item_id": e.item_id, "timestamp": e.timestamp} for e in entries]
        return JSONBytes(body)

    common: dict[str, Any] = {
        "route_class_override": JSONRoute,
        "methods": ["POST"],
        "response_class": JSONBytes,
        "responses": DOCUMENTED,
        "tags": [DATA],
        "dependencies": KEY_SCHEMES if keyed else None,
    }
    app.router.add_api_route("/events", events, status_code=202, response_model=EventsOut, **common)
    app.router.add_api_route("/history", history, response_model=HistoryOut, **common)


def offloaded(recommender: Recommender, space: str | None, filter: object) -> bool:
    """Whether a `/similar` or `/recommend` call runs in the thread pool (see `_answerer`):
    where the space's stores wait on the network, or the request has a filter."""
    return filter is not None or recommender.is_remote(space)


def _answerer(recommender: Recommender) -> Endpoint:
    """Runs a call in the thread pool where `offloaded` says so, else on the event loop.

    Measured by `benchmarks/slow_query_mix.py` (one worker, 16 clients of unfiltered
    `/recommend` among four filtered exact searches a second over a 400k-vector Flat store,
    about 30 ms each; two rounds on a shared 2-core machine, ratios to inline): everything
    inline, each slow search stalls the loop and the fast requests' p99 is 25 ms (8 without
    the slow ones); everything in the pool, the fast ones pay a thread hop and the GIL handed
    back and forth: requests/s 0.71-0.79x, CPU per request 1.5-1.9x (0.92x and 1.2x with no
    slow ones), p99 0.66-0.74x. Only the filtered calls in the pool: requests/s 1.00-1.03x,
    CPU per request 1.01-1.02x, p99 0.49-0.54x, no slow ones 0.99-1.01x; the slow search itself
    takes 2.1-2.2x as long (its thread waits for the GIL). A filter is what can send a search to
    the exact path over many vectors; an unfiltered search (ANN) and the sequence encoder
    (about 1.4 ms) cost less than the hop does to everyone else. `/recommend` decides the
    same way, and answers its calls on the loop through a `RecommendBatcher`."""

    async def answer(
        space: str | None, fn: Callable[..., Results], /, *args: Any, **kw: Any
    ) -> JSONBytes:
        if offloaded(recommender, space, kw.get("filter")):
            return results_body(await run_in_threadpool(fn, *args, **kw))
        return results_body(fn(*args, **kw))

    return answer


def _similar(recommender: Recommender, answer: Endpoint) -> Endpoint:
    async def similar(req: SimilarRequest) -> Response:
        """Items nearest a catalog item (itself left out)."""
        space = req.space or recommender.similar_space
        return await answer(
            space, recommender.similar, req.item_id, req.k, filter=req.filter, space=req.space
        )

    return similar


def _recommend(recommender: Recommender, batcher: RecommendBatcher) -> Endpoint:
    async def recommend(req: RecommendRequest) -> Response:
        """Items for a user: their two-tower vector (under the sequence encoder, from their
        recent history and the request's); with no id or an unknown one, the request's
        history, else their features, else popularity."""
        history = req.events()
        try:
            if offloaded(recommender, "two-tower", req.filter):
                results = await run_in_threadpool(
                    recommender.recommend,
                    req.user_id,
                    req.k,
                    exclude_seen=req.exclude_seen,
                    filter=req.filter,
                    features=req.features,
                    history=history,
                    now=req.now,
                )
            else:  # on the event loop, with the requests that arrived with it
                results = await batcher.recommend(
                    req.user_id,
                    req.k,
                    exclude_seen=req.exclude_seen,
                    features=req.features,
                    history=history,
                    now=req.now,
                )
        except FeatureError as exc:  # not what the model declares: a bad body, as pydantic's
            where = ("body", "features", exc.column)
            error = {"type": "value_error", "loc": where, "msg": exc.reason, "input": None}
            raise RequestValidationError([error]) from None
        return results_body(results, history=True)

    return recommend


def _search(recommender: Recommender) -> Endpoint:
    def search(req: SearchRequest) -> Response:
        """Items whose text is nearest the query text."""
        return results_body(recommender.search_text(req.text, req.k, req.filter))

    return search


def _search_image(recommender: Recommender) -> Endpoint:
    def search_image(
        file: Annotated[UploadFile, File(description="the query image (PNG, JPEG, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        filter: Annotated[str | None, Form(description="a filter as a JSON object")] = None,
    ) -> Response:
        """Items whose image is nearest the uploaded one; at most 10 MB."""
        data = _image_bytes(file)
        return results_body(recommender.search_image(data, k, _json_filter(filter)))

    return search_image


def _image_bytes(upload: UploadFile) -> bytes:
    data = upload.file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise HTTPException(413, f"image over {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    if not data:
        raise HTTPException(400, "empty image upload")
    from PIL import Image, UnidentifiedImageError  # the image extra, loaded at first use

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except UnidentifiedImageError:  # PIL's message names its BytesIO object
        raise HTTPException(
            400, f"cannot decode the image {upload.filename!r}: not a format Pillow reads"
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"cannot decode the image: {exc}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise HTTPException(
            400, f"image is {width}x{height}; at most {MAX_IMAGE_PIXELS:,} pixels are accepted"
        )
    return data


def _json_filter(raw: str | None) -> dict[str, Any] | None:
    """The form's filter field, parsed as strictly as a JSON body (see `JSONRoute`)."""
    if raw is None or not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"filter is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"filter must be a JSON object, got {type(value).__name__}")
    return value


def add_ops_routes(
    app: FastAPI, recommender: Recommender, metrics: ServiceMetrics, keyed: bool
) -> None:
    @app.get("/healthz", tags=["operations"])
    def healthz(request: Request) -> dict[str, Any]:
        """The status for anyone; with the API key (or where none is set), also each
        space's primary and replica store, whose paths and hosts are not for everyone."""
        if not keyed or getattr(request.state, "authorised", False):
            return {"status": "ok", "spaces": recommender.store_uris()}
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Request latency and counts by endpoint and status, and replica fallbacks."""
        return Response(metrics.render(), media_type=metrics.content_type)


def add_admin_routes(app: FastAPI, reloader: Reloader, keyed: bool) -> None:
    @app.post(
        "/admin/reload",
        tags=[ADMIN],
        dependencies=KEY_SCHEMES if keyed else None,
        responses={code: {"model": Problem} for code in (401, 403)},
    )
    async def reload() -> Response:
        """Load the generation each store alias points to now, where it moved, and swap it
        in; requests under way finish on the old one. Answers each space's outcome
        ("reloaded", "unchanged" or "failed", with the error), 500 if any failed (that space
        keeps serving what it served)."""
        if not keyed:
            return JSONBytes(NO_ADMIN, status_code=403)
        outcomes = await run_in_threadpool(reloader.reload)
        failed = any(o.status == "failed" for o in outcomes)
        body = {"spaces": {o.space: o.to_json() for o in outcomes}}
        return JSONBytes(body, status_code=500 if failed else 200)
