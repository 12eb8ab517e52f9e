"""Pure-ASGI middleware in front of every route: timing, header and body limits, the API key.

Each works on the raw ASGI messages, before FastAPI builds a request or reads a body, so
that a request without the key or over its limit costs no parsing, and a route is declared
once, as a FastAPI route, whatever checks stand in front of it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedrec.retrieval.api.bodies import JSONBytes
from embedrec.retrieval.api.metrics import CLIENT_GONE, ServiceMetrics


class Timing:
    """Times and counts each request by endpoint (its route's path, else "other") and status.
    A client that hangs up before it is answered counts as 499, not as the 500 or 400 that
    the app makes of the missing body."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what an exception that escapes the app becomes
        gone = False

        async def watch_receive() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and status == 500:
                gone = True
            return message

        async def watch_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, watch_receive, watch_send)
        except Exception:
            if not gone:  # with the client gone there is no one left to answer
                raise
        finally:
            path = scope["path"]
            endpoint = path if path in self.paths else "other"
            seconds = time.perf_counter() - started
            self.metrics.observe(endpoint, CLIENT_GONE if gone else status, seconds)


MAX_HEADER_BYTES = 16 * 1024
"""Request headers, names and values together, that a request may carry (431 above it)."""
MAX_HEADERS = 100
"""How many request headers a request may carry (431 above it)."""


class HeaderLimits:
    """Refuses a request whose headers are over MAX_HEADER_BYTES in all, or more than
    MAX_HEADERS of them (431), before anything reads them: the API key check, FastAPI's
    request. (The server has read them by then; this keeps a huge header from being copied
    and parsed again, and from reaching a route.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if size > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
                detail = (
                    f"request headers too large: {len(headers)} headers, {size:,} bytes "
                    f"(at most {MAX_HEADERS} and {MAX_HEADER_BYTES:,} bytes)"
                )
                await JSONBytes({"detail": detail}, status_code=431)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def has_key(headers: Mapping[bytes, bytes], api_key: bytes) -> bool:
    """Whether the request carries the API key, as X-API-Key or Authorization: Bearer."""
    given = headers.get(b"x-api-key")
    if not given:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        given = token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return given is not None and hmac.compare_digest(given, api_key)


NO_KEY = JSONBytes(
    {"detail": "missing or wrong API key: send it as X-API-Key or Authorization: Bearer"},
    status_code=401,
    headers={"WWW-Authenticate": "Bearer"},
)


class ApiKey:
    """Refuses requests to the guarded paths that lack the API key, before their body is
    read, and notes in every request's state whether it carried the key (`authorised`)."""

    def __init__(self, app: ASGIApp, api_key: str, guarded: frozenset[str]) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            ok = has_key(dict(scope["headers"]), self.api_key)
            scope.setdefault("state", {})["authorised"] = ok
            if not ok and scope["path"] in self.guarded:
                await NO_KEY(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class BodyRule:
    """What a route's request body must be: its media type and size limit in bytes."""

    media_type: str
    limit: int

    def accepts(self, content_type: bytes) -> bool:
        given = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
        if self.media_type == "application/json":
            return given == "application/json" or (
                given.startswith("application/") and given.endswith("+json")
            )
        return given == self.media_type


class BodyLimits:
    """Refuses a body of another media type than its route takes (415), or over the route's
    limit (413): by Content-Length up front, else while it streams in."""

    def __init__(self, app: ASGIApp, rules: Mapping[str, BodyRule]) -> None:
        self.app = app
        self.rules = dict(rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self.rules.get(scope["path"]) if scope["type"] == "http" else None
        if rule is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = _refusal(rule, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > rule.limit:
                raise HTTPException(413, f"request body over {rule.limit:,} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _refusal(rule: BodyRule, headers: Mapping[bytes, bytes]) -> Any:
    """The 415 or 413 answer for a body that its headers already rule out, else None."""
    if not rule.accepts(headers.get(b"content-type", b"")):
        return JSONBytes(
            {"detail": f"send the body as Content-Type: {rule.media_type}"}, status_code=415
        )
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > rule.limit:
        detail = f"request body of {int(declared):,} bytes is over {rule.limit:,}"
        return JSONBytes({"detail": detail}, status_code=413)
    return None
