"""Users' live histories: the interactions that arrived as events, layered over the
histories the service was trained on (`Histories`, embedrec.retrieval.history).

Each user's live part is bounded to `HistoryLimits.size` entries and to `max_age_s`, and
ordered by event time, so that it equals a replay of the same events in any order. Applying
is idempotent on `event_id`: an event applied once is never applied again (a redelivered
stream entry, a retried POST).

`MemoryHistories` is the embedded default: in process, for one worker, lost on restart.
`RedisHistories` (redis_histories.py) keeps them in Redis, shared by every worker.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from embedrec.retrieval.events.models import InteractionEvent
from embedrec.retrieval.history import Histories, Interaction
from embedrec.stores.errors import StoreUnavailable

if TYPE_CHECKING:
    from embedrec.retrieval.events.stats import LiveStats

APPLIED_MEMORY = 1_000_000
"""Event ids the in-process histories remember for idempotency (oldest forgotten first)."""


class HistoryUnavailable(StoreUnavailable):
    """The live histories cannot be read or written now (Redis is down)."""


@dataclass(frozen=True)
class HistoryLimits:
    size: int = 50
    """Entries kept per user: the sequence encoder's N."""
    max_age_s: float | None = 30 * 86_400.0
    """Entries older than this (by event time) are dropped; None: kept until pushed out."""

    def oldest(self, now: float) -> float:
        return -float("inf") if self.max_age_s is None else now - self.max_age_s


class Answer(Protocol):
    source: str


@dataclass
class LiveRead:
    """The live entries of the users of one request, read once."""

    entries: dict[str, list[Interaction]] = field(default_factory=dict)
    unavailable: bool = False
    """The live histories could not be read: answers come from the stored vectors."""

    def items(self, user_id: str | None) -> frozenset[str]:
        if user_id is None:
            return frozenset()
        return frozenset(i.item_id for i in self.entries.get(user_id, ()))


@dataclass(frozen=True)
class ReadView:
    """`Histories` for one request: the stored ones followed by the live entries read for
    it (`LiveRead`), so that Redis is read once per request and its being down leaves the
    stored histories alone."""

    base: Histories | None
    read: LiveRead

    def recent(self, user_id: str, n: int) -> list[Interaction]:
        stored = self.base.recent(user_id, n) if self.base is not None else []
        return merge(stored, self.read.entries.get(user_id, []))[-n:] if n > 0 else []


class LiveHistories:
    """`Histories` whose live part events change; `recent` merges it with `base`."""

    def __init__(self, base: Histories | None, limits: HistoryLimits) -> None:
        self.base = base
        self.limits = limits
        self.stats: LiveStats | None = None
        """Where `settle` reports freshness (set by the `Live` that owns these)."""

    def read(self, user_ids: Sequence[str]) -> LiveRead:
        """The users' live entries; `unavailable` (and none) where they cannot be read."""
        try:
            return LiveRead({u: self.live(u) for u in dict.fromkeys(user_ids)})
        except HistoryUnavailable:
            return LiveRead(unavailable=True)

    def view(self, read: LiveRead) -> ReadView:
        return ReadView(self.base, read)

    def settle(
        self, read: LiveRead, user_ids: Sequence[str | None], answers: Sequence[Answer]
    ) -> None:
        """After a recommendation: a known user's answer came from the stored vector (or
        the stored history) alone where the live history was unavailable: its source
        becomes "stored-vector"; else it reflects the live entries read (their freshness is
        observed)."""
        for uid, answer in zip(user_ids, answers, strict=True):
            if uid is None or answer.source == "popularity":
                continue
            if read.unavailable:
                if answer.source == "two-tower":
                    answer.source = "stored-vector"
            elif self.stats is not None:
                self.stats.reflected(uid, read.entries.get(uid, ()))

    def add(self, events: Sequence[InteractionEvent]) -> int:
        """Apply `events`; returns how many were new (not applied before)."""
        raise NotImplementedError

    def live(self, user_id: str) -> list[Interaction]:
        """The user's live entries, oldest first (raises `HistoryUnavailable`)."""
        raise NotImplementedError

    def park(self, events: Sequence[InteractionEvent]) -> None:
        """Hold interactions with an item the catalogue does not hold yet."""
        raise NotImplementedError

    def release(self, item_id: str) -> list[InteractionEvent]:
        """The interactions held for `item_id`, which now exists (and forget them)."""
        raise NotImplementedError

    def recent(self, user_id: str, n: int) -> list[Interaction]:
        live = self.live(user_id)
        stored = self.base.recent(user_id, n) if self.base is not None else []
        return merge(stored, live)[-n:] if n > 0 else []


def merge(stored: list[Interaction], live: list[Interaction]) -> list[Interaction]:
    """The training history followed by the live one: live events come after training."""
    return [*stored, *live]


class MemoryHistories(LiveHistories):
    """Live histories in this process: the embedded default, for one worker."""

    def __init__(self, base: Histories | None = None, limits: HistoryLimits | None = None):
        super().__init__(base, limits or HistoryLimits())
        self._lock = threading.Lock()
        self._users: dict[str, list[tuple[float, str, str]]] = {}
        """user -> (timestamp, event_id, item_id), sorted."""
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._parked: dict[str, list[InteractionEvent]] = {}

    def add(self, events: Sequence[InteractionEvent]) -> int:
        oldest = self.limits.oldest(time.time())
        new = 0
        with self._lock:
            for event in events:
                if event.event_id in self._applied:
                    continue
                self._remember(event.event_id)
                new += 1
                if event.timestamp < oldest:
                    continue
                entries = self._users.setdefault(event.user_id, [])
                bisect.insort(entries, (event.timestamp, event.event_id, event.item_id))
                del entries[: max(0, len(entries) - self.limits.size)]
        return new

    def _remember(self, event_id: str) -> None:
        self._applied[event_id] = None
        if len(self._applied) > APPLIED_MEMORY:
            self._applied.popitem(last=False)

    def live(self, user_id: str) -> list[Interaction]:
        oldest = self.limits.oldest(time.time())
        with self._lock:
            entries = list(self._users.get(user_id, ()))
        return [Interaction(item, ts) for ts, _, item in entries if ts >= oldest]

    def park(self, events: Sequence[InteractionEvent]) -> None:
        with self._lock:
            for event in events:
                self._parked.setdefault(event.item_id, []).append(event)

    def release(self, item_id: str) -> list[InteractionEvent]:
        with self._lock:
            return self._parked.pop(item_id, [])
