"""How the service answers errors: client input is a 4xx that says what to fix, a store that
cannot be reached a 503; see the package docstring for the codes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from embedrec.retrieval.api.bodies import JSONBytes, Problem
from embedrec.retrieval.client import ItemNotFound
from embedrec.stores.errors import StoreUnavailable

DOCUMENTED: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 404, 413, 415, 503)
}
"""The error answers every data route may give besides FastAPI's own 422."""


async def _invalid(request: Request, exc: Exception) -> JSONBytes:
    # orjson writes a non-finite input as null where FastAPI's own handler fails on it
    assert isinstance(exc, RequestValidationError)
    return JSONBytes({"detail": exc.errors()}, status_code=422)


async def _not_found(request: Request, exc: Exception) -> JSONBytes:
    return JSONBytes({"detail": str(exc)}, status_code=404)


async def _unavailable(request: Request, exc: Exception) -> JSONBytes:
    return JSONBytes({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _bad_input(request: Request, exc: Exception) -> JSONBytes:
    # FilterError and the stores' other input errors, InputError (a text or image an
    # embedder cannot use) and SpaceNotConfigured are all ValueErrors saying what to fix
    return JSONBytes({"detail": str(exc)}, status_code=400)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ItemNotFound, _not_found)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(ValueError, _bad_input)
