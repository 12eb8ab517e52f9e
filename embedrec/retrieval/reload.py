"""`Reloader`: the service follows its stores' aliases without a restart.

Each space whose store URI is an alias is checked (`TokenFn`: the alias's live token, one
small read) every `reload_interval_s`, and on `POST /admin/reload`. When a token moved, the
new generation is opened beside the serving one (with the embedder or two-tower model its
store info names), warmed, and swapped in (`Recommender.swap`, one assignment). A failed
reload (a generation that is missing or damaged, a model that does not match its store)
leaves the serving generation untouched, and says why.

The space it replaced goes to one background worker, which compares the two (the drift
gauges on /metrics, `embedrec.retrieval.live_drift`) and then waits until no request holds
the old bundle any more before closing its stores. Requests take no lock and keep no count:
the worker holds only a weak reference, which dies when the last request that read the old
space returns (CPython frees it then, by reference count). A request that still holds it
after `drain_timeout_s` is taken to have leaked it, and the stores are closed regardless.
At start, the same worker compares each live generation with the previous one its alias
keeps, so that the gauges are there before the first swap.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import ServeConfig, SpaceConfig, TwoTowerSpaceConfig
from embedrec.retrieval.live_drift import compare_spaces
from embedrec.retrieval.spaces import LiveTokens, Space, TokenFn, Tokens, open_space
from embedrec.stores.errors import ConfigError
from embedrec.stores.lifecycle.aliases import alias_book

log = logging.getLogger("embedrec.retrieval.reload")

RETRY_FAILED_S = 60.0
"""How long the poll leaves a generation that failed to load before it tries it again."""
Compare = Callable[[Space, Space], dict[str, float]]
"""(old, new) -> the drift figures of the new generation against the old, by name."""


@dataclass(frozen=True)
class Outcome:
    """What a reload did to one space."""

    space: str
    status: str
    """"reloaded", "unchanged" or "failed"."""
    generation: str | None
    """The generation serving after it (the alias's live token; None for a plain store)."""
    previous: str | None = None
    """The one it replaced, where it reloaded."""
    error: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "generation"}


class Reloader:
    """Reloads the spaces of `recommender` (opened from `config`) whose aliases moved."""

    def __init__(
        self,
        recommender: Recommender,
        config: ServeConfig,
        *,
        token: TokenFn | None = None,
        compare: Compare | None = None,
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.recommender = recommender
        self.token = token or LiveTokens()
        self.compare = compare
        self.drain_timeout_s = drain_timeout_s
        self._configs = config.spaces()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed: dict[str, tuple[Tokens, float]] = {}
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._drift: dict[str, dict[str, float]] = {}
        self._retiring: queue.Queue[tuple[Space, Space] | str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._retire, name="embedrec-retire", daemon=True)]
        self._threads[0].start()

    @classmethod
    def for_service(
        cls, recommender: Recommender, config: ServeConfig, *, token: TokenFn | None = None
    ) -> Reloader:
        """The reloader `embedrec serve` runs: drift measured on `server.drift_sample` users
        and items against the alias's previous generation, and after each swap (none when
        0), polling started at `reload_interval_s`."""
        sample = config.server.drift_sample
        compare = None
        if sample:
            compare = functools.partial(
                compare_spaces, interactions=recommender.interactions, sample=sample
            )
        reloader = cls(recommender, config, token=token, compare=compare)
        reloader.compare_with_previous()
        reloader.start(config.server.reload_interval_s)
        return reloader

    # -- what the metrics read -----------------------------------------------------------

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        """Reloads by (space, status), "unchanged" left out."""
        return dict(self._outcomes)

    def drift(self) -> dict[str, dict[str, float]]:
        """The last comparison of each space's live generation with the one it replaced."""
        return self._drift

    # -- reloading -----------------------------------------------------------------------

    def start(self, interval_s: float | None) -> None:
        """Check the aliases every `interval_s` seconds in a background thread (none or 0:
        never; `reload` still works)."""
        if interval_s:
            poll = threading.Thread(
                target=self._poll, args=(interval_s,), name="embedrec-reload", daemon=True
            )
            self._threads.append(poll)
            poll.start()

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reload(retry_failed=False)
            except Exception:  # the poll must outlive any one failure; it is logged
                log.exception("checking the store aliases failed")

    def reload(self, *, retry_failed: bool = True) -> list[Outcome]:
        """Reload every space whose alias moved since it was opened. The poll retries a
        generation that failed only every `RETRY_FAILED_S` (a transient failure, such as a
        network store that did not answer, heals; a lasting one is not logged every
        interval); an explicit reload retries it at once."""
        with self._lock:
            return [self._reload(name, cfg, retry_failed) for name, cfg in self._configs.items()]

    def _reload(self, name: str, cfg: SpaceConfig, retry_failed: bool) -> Outcome:
        current = self.recommender.space(name)
        try:
            tokens = (self.token(cfg.uri), self.token(cfg.replica) if cfg.replica else None)
        except Exception as exc:
            return self._failure(name, current, None, exc)
        if tokens == current.tokens:
            return Outcome(name, "unchanged", current.generation)
        failed, at = self._failed.get(name, (None, 0.0))
        if not retry_failed and failed == tokens and time.monotonic() - at < RETRY_FAILED_S:
            error = f"failed before; not retried for {RETRY_FAILED_S:.0f} s"
            return Outcome(name, "failed", current.generation, error=error)
        started = time.perf_counter()
        try:
            with ExitStack() as opened:
                new = open_space(
                    name, cfg, opened, users=self._users(), token=self.token, reuse=current
                )
                self.recommender.warm(new)
                opened.pop_all()
        except Exception as exc:
            return self._failure(name, current, tokens, exc)
        old = self.recommender.swap(new)
        self._failed.pop(name, None)
        self._outcomes[(name, "reloaded")] += 1
        self._retiring.put((old, new))
        seconds = round(time.perf_counter() - started, 3)
        log.info("%s: now serving generation %s (was %s), loaded in %.2f s", name,
                 new.generation, old.generation, seconds)  # fmt: skip
        return Outcome(name, "reloaded", new.generation, old.generation, seconds=seconds)

    def _failure(self, name: str, current: Space, tokens: Tokens | None, exc: Exception) -> Outcome:
        error = f"{type(exc).__name__}: {exc}"
        if tokens is not None:
            self._failed[name] = (tokens, time.monotonic())
        self._outcomes[(name, "failed")] += 1
        log.error("%s: reload failed, still serving generation %s: %s", name,
                  current.generation, error)  # fmt: skip
        return Outcome(name, "failed", current.generation, error=error)

    # -- retiring what a swap replaced ---------------------------------------------------

    def _retire(self) -> None:
        """The worker: for each swap, compare the generations, then close the old one's
        stores once no request holds it. Only weak references outlive each step, so that
        the wait can see the last request let go."""
        while True:
            job = self._retiring.get()
            if job is None:
                return
            if isinstance(job, str):  # a space to compare with its alias's previous generation
                pair = None if self._stop.is_set() else self._previous(job)
                if pair is None:
                    continue
                job = pair
                del pair
            old, new = job
            del job
            if self.compare is not None and not self._stop.is_set():
                self._compare(old, new)
            del new
            gone = weakref.ref(old)
            failover = old.failover
            del old
            self._drain(gone, failover.space)
            failover.close()

    def compare_with_previous(self) -> None:
        """Compare, in the worker, each space's live generation with the previous one its
        alias keeps (if any), so that the drift gauges are there before the first swap."""
        if self.compare is not None:
            for name in self._configs:
                self._retiring.put(name)

    def _previous(self, name: str) -> tuple[Space, Space] | None:
        """(the alias's previous generation, opened for the comparison, and the live space),
        or None where there is none or it cannot be opened (logged)."""
        cfg = self._configs[name]
        try:
            previous = alias_book(cfg.uri).state().previous
        except ConfigError:  # a scheme without aliases
            return None
        if not previous:
            return None
        live = self.recommender.space(name)
        # the previous generation's own embedder or model, whatever the config pins
        update = {"uri": previous[0].uri, "replica": None}
        if isinstance(cfg, TwoTowerSpaceConfig):
            update["model"] = None
        elif hasattr(cfg, "embedder"):
            update["embedder"] = None
        try:
            with ExitStack() as opened:
                old = open_space(name, cfg.model_copy(update=update), opened, users=self._users(),
                                 token=lambda uri: None, reuse=live)  # fmt: skip
                opened.pop_all()
        except Exception as exc:  # the gauges wait for the next swap; serving is untouched
            log.warning("%s: cannot open the previous generation %s to compare: %s: %s",
                        name, previous[0].name, type(exc).__name__, exc)  # fmt: skip
            return None
        return old, live

    def _users(self) -> pd.DataFrame | None:
        users = self.recommender.interactions
        return users.users if users is not None else None

    def _drain(self, gone: weakref.ref[Space], name: str) -> None:
        """Wait until no request holds the replaced space (its weak reference dies), at most
        `drain_timeout_s`; not at all once closing."""
        deadline = time.monotonic() + self.drain_timeout_s
        while gone() is not None and not self._stop.is_set():
            if time.monotonic() > deadline:
                log.warning(
                    "a request still holds the replaced %s space after %.0f s; closing it",
                    name,
                    self.drain_timeout_s,
                )
                return
            time.sleep(0.02)

    def _compare(self, old: Space, new: Space) -> None:
        assert self.compare is not None
        try:
            figures = self.compare(old, new)
        except Exception:  # a comparison that fails must not stop the stores being closed
            log.exception("comparing the %s generations failed", new.name)
            return
        self._drift = {**self._drift, new.name: figures}

    def close(self) -> None:
        """Stop the poll and the worker; spaces waiting to retire are closed at once."""
        self._stop.set()
        self._retiring.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
