"""Pinecone's failures as store errors, and the one retry schedule for its requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pinecone._internal.http_client import _RetryTransport
from pinecone.errors.exceptions import (
    ApiError,
    ForbiddenError,
    NotFoundError,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)

from embedrec.stores.errors import (
    AuthError,
    ConfigError,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
)
from embedrec.stores.uri import StoreURI

MAX_BACKOFF = 8.0
RETRYABLE = (RateLimitError, ServiceError, PineconeConnectionError, PineconeTimeoutError)

T = TypeVar("T")


def pop_float(uri: StoreURI, name: str, default: float) -> float:
    value = uri.pop(name)
    if value is None:
        return default
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{uri.raw}: option {name}={value!r} is not a number") from None
    if not out >= 0:
        raise ConfigError(f"{uri.raw}: option {name}={value!r} must be >= 0")
    return out


@dataclass(frozen=True)
class Retry:
    retries: int = 5
    backoff: float = 0.5

    def delays(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield min(self.backoff * 2**attempt, MAX_BACKOFF)


def own_retries(index: Any) -> None:
    """Switch off the data-plane client's own retries: `Index()` takes no retry config, and
    the SDK's schedule (4 attempts) would multiply with the store's. The retry transport is
    SDK-internal; tests/stores/test_pinecone_faults.py checks that one 503 is one request."""
    transport = getattr(getattr(index._http, "_client", None), "_transport", None)
    if isinstance(transport, _RetryTransport):
        transport._config = replace(transport._config, max_retries=0)


def with_retries(retry: Retry, where: str, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    delays = retry.delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn(**kwargs)
        except (UnauthorizedError, ForbiddenError) as exc:
            raise AuthError(
                f"{where}: Pinecone refused the API key for {what} ({exc.status_code}); "
                "check PINECONE_API_KEY"
            ) from None
        except NotFoundError:
            raise StoreNotFound(f"{where}: not found ({what})") from None
        except RETRYABLE as exc:
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailable(
                    f"{where}: {what} failed {attempts} times; last error: {exc}"
                ) from exc
            after = getattr(exc, "retry_after", None)
            time.sleep(min(max(delay, after or 0.0), MAX_BACKOFF))
        except ApiError as exc:
            raise StoreError(f"{where}: Pinecone refused {what}: {exc}") from None
        except PineconeError as exc:
            raise StoreError(f"{where}: {what} failed: {exc}") from None
