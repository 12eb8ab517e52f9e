"""`Failover`: one vector space's primary store and its optional replica.

A call that fails for the store's sake (a `StoreError` other than the caller's bad input, a
connection error) or, on a network store, outlasts `timeout_s` is retried on the replica,
with a logged warning and a count (`on_fallback`); for `cooldown_s` after that, calls go
straight to the replica. Without a replica the caller gets `StoreUnavailable` naming the
store URI. Bad input (a `ValueError`, such as `FilterError`) and any other exception are
raised as they are and never count against a store: another store would fail on them the
same way, and a bug is not an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from embedrec.stores import StoreError, StoreUnavailable, VectorStore
from embedrec.stores.errors import ConfigError

log = logging.getLogger("embedrec.retrieval.client")
T = TypeVar("T")


def is_store_fault(exc: BaseException) -> bool:
    """Whether `exc` says that the store failed (down, timed out, unreachable, locked,
    corrupt), rather than that the call's input was bad or the caller has a bug."""
    return isinstance(exc, (StoreError, TimeoutError, OSError)) and not isinstance(exc, ValueError)


class Failover:
    """One space's stores: calls go to the primary, and to the replica when it fails."""

    def __init__(
        self,
        space: str,
        primary: VectorStore,
        replica: VectorStore | None = None,
        *,
        timeout_s: float | None = 2.0,
        cooldown_s: float = 5.0,
        on_fallback: Callable[[str, str], None] | None = None,
    ) -> None:
        if replica is not None and (replica.dim, replica.metric) != (primary.dim, primary.metric):
            raise ConfigError(
                f"{space} replica {replica.uri} ({replica.dim}-d, {replica.metric}) does not "
                f"match its primary {primary.uri} ({primary.dim}-d, {primary.metric})"
            )
        self.space = space
        self.primary = primary
        self.replica = replica
        self.timeout_s = timeout_s
        self.cooldown_s = cooldown_s
        self.on_fallback = on_fallback or (lambda space, op: None)
        self._down_until = 0.0
        self._pools: dict[int, ThreadPoolExecutor] = {}
        if timeout_s is not None:
            for store in (primary, replica):
                if store is not None and store.capabilities.remote:
                    self._pools[id(store)] = ThreadPoolExecutor(
                        max_workers=32, thread_name_prefix=f"{space}-store"
                    )

    @property
    def dim(self) -> int:
        return self.primary.dim

    @property
    def remote(self) -> bool:
        """Whether a call may wait on the network (a Qdrant server, Pinecone)."""
        return any(s is not None and s.capabilities.remote for s in (self.primary, self.replica))

    def _run(self, store: VectorStore, fn: Callable[[VectorStore], T]) -> T:
        pool = self._pools.get(id(store))
        if pool is None:
            return fn(store)
        future = pool.submit(fn, store)
        try:
            return future.result(timeout=self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout_s} s") from None

    def call(self, op: str, fn: Callable[[VectorStore], T]) -> T:
        """`fn(store)` on the primary, else on the replica; only a store fault (see
        `is_store_fault`) falls back, and anything else is raised as it is."""
        if self.replica is None or time.monotonic() >= self._down_until:
            try:
                return self._run(self.primary, fn)
            except Exception as exc:
                if not is_store_fault(exc):
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                if self.replica is None:
                    raise StoreUnavailable(
                        f"{self.space} store {self.primary.uri} failed on {op}: {reason}"
                    ) from exc
                self._down_until = time.monotonic() + self.cooldown_s
                log.warning(
                    "%s store %s failed on %s (%s); using replica %s for the next %.0f s",
                    self.space,
                    self.primary.uri,
                    op,
                    reason,
                    self.replica.uri,
                    self.cooldown_s,
                )
        self.on_fallback(self.space, op)
        try:
            return self._run(self.replica, fn)
        except Exception as exc:
            if not is_store_fault(exc):
                raise
            raise StoreUnavailable(
                f"{self.space} store {self.primary.uri} is down and its replica "
                f"{self.replica.uri} failed on {op}: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for store in (self.primary, self.replica):
            if store is not None:
                store.close()
