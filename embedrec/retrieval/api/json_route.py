"""`JSONRoute`: the FastAPI route class of every route that takes one JSON body model.

A `JSONRoute` is declared, mounted, matched and documented as any FastAPI route is; only
answering it is shorter. FastAPI's request handler (dependency solving, its request and
exit stacks, content negotiation) costs more per request than the search it serves (see
benchmarks/load_test.py), and these routes need none of it: the body is parsed by orjson,
validated by the model's pydantic-core validator, the endpoint called, and its response
sent. Errors go to the app's exception handlers as from any route.
"""

from __future__ import annotations

import inspect
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class JSONRoute(APIRoute):
    """A route whose endpoint takes one pydantic model, the request body, and returns a
    `Response`. orjson refuses NaN, infinities (`1e400`), lone surrogates and nesting over
    1,024 levels as invalid JSON (a 422), so that none reaches validation, the stores or the
    422 handler; a model with `strict=True` refuses coercion (`"k": "10"`)."""

    def __init__(self, path: str, endpoint: Any, **kw: Any) -> None:
        super().__init__(path, endpoint, **kw)
        dependant = self.dependant
        others = (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
        )
        unsupported = [d for d in dependant.dependencies if not isinstance(d.call, SecurityBase)]
        returns = get_typed_return_annotation(endpoint)
        answers = isinstance(returns, type) and issubclass(returns, Response)
        if len(dependant.body_params) != 1 or any(others) or unsupported or not answers:
            raise TypeError(
                f"{path}: a JSONRoute's endpoint takes one body model and no other parameters "
                "or dependencies (security schemes only document what middleware checks), "
                "and returns a Response; declare it as a plain APIRoute"
            )
        model = dependant.body_params[0].field_info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        self.model: type[BaseModel] = model
        self.is_async = inspect.iscoroutinefunction(endpoint)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.methods:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(self.methods))})
        body = self._parse(await _read_body(receive))
        if self.is_async:
            response = await self.endpoint(body)
        else:
            response = await run_in_threadpool(self.endpoint, body)
        await response(scope, receive, send)

    def _parse(self, raw: bytes) -> BaseModel:
        """The body, with FastAPI's 422 (errors located under "body") when it is invalid."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([error]) from None
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
