"""`create_app`: the service over a `Recommender`, built in three steps: plan (what the
options decide), build (the FastAPI app and its routes) and collect (what the middleware
needs to know of those routes), then the middleware wired in front."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from embedrec.retrieval.api.bodies import MAX_FORM_BODY, MAX_JSON_BODY
from embedrec.retrieval.api.docs import add_docs_routes
from embedrec.retrieval.api.errors import add_error_handlers
from embedrec.retrieval.api.metrics import ServiceMetrics
from embedrec.retrieval.api.middleware import (
    ApiKey,
    BodyLimits,
    BodyRule,
    HeaderLimits,
    Timing,
)
from embedrec.retrieval.api.routes import (
    ADMIN,
    DATA,
    add_admin_routes,
    add_data_routes,
    add_event_routes,
    add_ops_routes,
)
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.live.service import Live
from embedrec.retrieval.live_drift import GAUGES
from embedrec.retrieval.reload import Reloader

LIMITS = {"application/json": MAX_JSON_BODY, "multipart/form-data": MAX_FORM_BODY}
"""Body size limits by the media type a route takes."""
TELEMETRY = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry is off: the service exports its metrics to Prometheus, and
FastAPI otherwise asks on every request whether an OpenTelemetry provider is configured,
which cost a quarter of what routing a request costs (see benchmarks/load_test.py)."""


@dataclass(frozen=True)
class Plan:
    """What the options decide before anything is built."""

    api_key: str | None
    description: str


@dataclass(frozen=True)
class RouteFacts:
    """What the middleware needs to know of the routes, read from the built app."""

    paths: frozenset[str]
    """Every route's path: the endpoint label of the metrics (others count as "other")."""
    guarded: frozenset[str]
    """The data and admin routes, which need the API key where one is set."""
    bodies: dict[str, BodyRule]
    """The media type and size limit of each route that takes a body."""


def plan(api_key: str | None) -> Plan:
    """`api_key` defaults to `$EMBEDREC_API_KEY`; with neither, the data routes are open."""
    key = api_key or os.environ.get("EMBEDREC_API_KEY") or None
    what = "Data endpoints need the API key." if key else "No API key is required."
    return Plan(key, f"Similar items, recommendations and search over vector stores. {what}")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On start, move everything built so far (the stores' metadata, the model, the
    catalog) out of the cyclic GC's reach: it lives as long as the process, and a full
    collection that walks it stalls every request in flight. Torch computes with one thread:
    a server process is one core's worth of work (`--workers`), and torch's own threads spin
    against each other's and the other workers' (a sequence user vector from a 50-item history
    took 59 ms of CPU with two threads on a busy 2-core machine, 1.4 ms with one)."""
    gc.freeze()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build(
    recommender: Recommender,
    plan: Plan,
    metrics: ServiceMetrics,
    reloader: Reloader | None,
    live: Live | None = None,
) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="embedrec",
        version="0.1.0",
        description=plan.description,
        telemetry=TELEMETRY,
        docs_url=None,  # /docs and /redoc come from the package's files (add_docs_routes)
        redoc_url=None,
    )
    add_docs_routes(app)
    add_data_routes(app, recommender, keyed=plan.api_key is not None)
    add_ops_routes(app, recommender, metrics, keyed=plan.api_key is not None)
    if live is not None:
        add_event_routes(app, live, keyed=plan.api_key is not None)
    if reloader is not None:
        add_admin_routes(app, reloader, keyed=plan.api_key is not None)
    add_error_handlers(app)
    # The router tries routes in order and FastAPI adds its docs' routes first: the data
    # routes, which carry the load, go ahead of them (a stable sort keeps the rest in order).
    app.router.routes.sort(key=lambda route: DATA not in getattr(route, "tags", ()))
    return app


def collect(app: FastAPI) -> RouteFacts:
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    bodies = {}
    for route in routes:
        if route.body_field is not None:
            media_type = route.body_field.field_info.media_type
            bodies[route.path] = BodyRule(media_type, LIMITS[media_type])
    return RouteFacts(
        paths=frozenset(r.path for r in app.routes if isinstance(r, Route)),
        guarded=frozenset(r.path for r in routes if {DATA, ADMIN} & set(r.tags)),
        bodies=bodies,
    )


def wire(app: FastAPI, facts: RouteFacts, plan: Plan, metrics: ServiceMetrics) -> None:
    """The middleware, outermost last: timing sees every answer, the header limits come
    before anything reads a header, the key (where one is set) is checked before the body
    limits, and all before FastAPI reads a body."""
    app.add_middleware(BodyLimits, rules=facts.bodies)
    if plan.api_key is not None:
        app.add_middleware(ApiKey, api_key=plan.api_key, guarded=facts.guarded)
    app.add_middleware(HeaderLimits)
    app.add_middleware(Timing, metrics=metrics, paths=facts.paths)


def create_app(
    recommender: Recommender,
    api_key: str | None = None,
    reloader: Reloader | None = None,
    live: Live | None = None,
) -> FastAPI:
    """The service over `recommender`; see `plan` for `api_key`. With `reloader` (over the
    same recommender), `POST /admin/reload` and the reload and drift metrics; with `live`
    (over the same recommender), `POST /events` and the event metrics."""
    options = plan(api_key)
    metrics = ServiceMetrics(recommender.fallback_counts)
    if reloader is not None:
        metrics.watch_reloads(reloader.outcome_counts, reloader.drift, GAUGES)
    if live is not None:
        metrics.watch_registry(live.stats.registry)
    app = build(recommender, options, metrics, reloader, live)
    wire(app, collect(app), options, metrics)
    return app
