"""How the service answers errors: client input is a 4xx that says what to fix, a store that
cannot be reached a 503; see the package docstring for the codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from embedrec.retrieval.api.bodies import JSONBytes, Problem
from embedrec.retrieval.client import ItemNotFound
from embedrec.stores.errors import StoreUnavailable

DOCUMENTED: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 404, 413, 415, 422, 503)
}
"""The error answers every data route may give, all of one shape (`Problem`)."""
SHOWN_ERRORS = 3
"""How many of a 422's errors its one-line `detail` names."""


def summary(errors: Sequence[Mapping[str, Any]]) -> str:
    """A 422's errors as one line: `body.k: Input should be ...; ...`."""
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:SHOWN_ERRORS]]
    more = len(errors) - SHOWN_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def _invalid(request: Request, exc: Exception) -> JSONBytes:
    # orjson writes a non-finite input as null where FastAPI's own handler fails on it
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    return JSONBytes({"detail": summary(errors), "errors": errors}, status_code=422)


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
