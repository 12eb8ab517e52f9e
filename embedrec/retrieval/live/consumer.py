"""The Redis Stream consumer: events read through a consumer group, so that several workers
or hosts share one stream, each entry delivered to one of them.

An entry is `XADD STREAM * event '{...json...}'`. Each round the consumer

1. claims (XAUTOCLAIM) entries another consumer was delivered and left unacknowledged for
   longer than `claim_idle_s` (it died), and, after a start or an error, re-reads its own;
2. reads new entries (XREADGROUP, blocking up to `block_s`);
3. applies them (`EventApplier`: idempotent on event id, so an entry delivered twice,
   because its consumer died between applying and acknowledging, has its effect once);
4. acknowledges them (XACK) only then.

A malformed event, or one an embedder or store refuses, goes to the dead-letter stream
(`STREAM:dead`, with the reason and its stream id) and is acknowledged; it never stops the
consumer. When Redis or a store is down, nothing is acknowledged and the round is tried
again with a growing pause; the consumer picks up where it stopped when they return.

A batch that fails otherwise (a bug, not a bad event) is applied again one event at a time:
the others are applied and acknowledged, and each event that fails alone stays pending, its
failures counted in `STREAM:failures` (with the last error in `STREAM:errors`). An entry
that has failed `max_failures` times goes to the dead-letter stream with that error (a
poison entry). Failures are counted, not deliveries: a store outage or a killed consumer
delivers entries again too, and must not dead-letter them.

An event that kills the consumer's process (a crash in native code, the memory limit) raises
nothing to count, so entries delivered again are counted before they are applied: each is
marked in `STREAM:failures`, and the mark is removed when it is applied (or taken back on an
outage). A mark left behind means the process ended while applying it; such a suspect is
then applied alone, marked just before, so only the entry that keeps ending the process
reaches `max_failures`, and the others are applied and acknowledged one by one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

import orjson
import redis

from embedrec.retrieval.events.models import CatalogueEvent, Event, Rejection, parse_event
from embedrec.retrieval.events.redis_histories import unavailable_as
from embedrec.retrieval.live.applier import EventApplier
from embedrec.stores.errors import StoreUnavailable

log = logging.getLogger("embedrec.stream")
Entry = tuple[bytes, dict[bytes, bytes]]
DeadEntry = tuple[bytes, bytes, str]
"""(stream id, the raw event, the reason): one dead letter."""
MAX_PAUSE_S = 5.0
ENDED = "the consumer's process ended while applying it"
"""The error recorded with a mark: what stays when a process dies before it settles it."""


@dataclass(frozen=True)
class StreamSettings:
    stream: str = "embedrec:events"
    group: str = "embedrec"
    consumer: str = ""
    """This consumer's name in the group; default host-pid. A consumer restarted under its
    old name re-reads its own unacknowledged entries first."""
    batch: int = 500
    block_s: float = 1.0
    claim_idle_s: float = 10.0
    max_failures: int = 5
    """Failures (bugs) of one entry before it is dead-lettered as poison."""

    @property
    def dead_letter(self) -> str:
        return f"{self.stream}:dead"

    @property
    def failures(self) -> tuple[str, str]:
        """The hashes of failing entries: stream id -> failures, stream id -> last error."""
        return f"{self.stream}:failures", f"{self.stream}:errors"

    def name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"


class BatchFailed(RuntimeError):
    """Events of a batch failed with a bug; the others were applied and acknowledged."""


class StreamConsumer:
    def __init__(
        self, client: redis.Redis, applier: EventApplier, settings: StreamSettings
    ) -> None:
        self.client, self.applier, self.settings = client, applier, settings
        self.name = settings.name()
        self._own_backlog = True
        self._next_claim = 0.0
        self._unsettled: list[bytes] = []
        """Marks an outage left to take back (Redis was down when they were to go)."""

    def ensure_group(self) -> None:
        """Create the group (from the stream's start, so that no entry is missed)."""
        try:
            self.client.xgroup_create(self.settings.stream, self.settings.group, "0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def step(self) -> int:
        """One round; returns how many entries it handled."""
        s = self.settings
        handled = 0
        if self._unsettled:
            self._unmark(self._unsettled)
            self._unsettled = []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + s.claim_idle_s / 2
            claimed = self.client.xautoclaim(
                s.stream, s.group, self.name, int(s.claim_idle_s * 1000), "0-0", count=s.batch
            )[1]
            handled += self.handle(claimed, again=True)
        if self._own_backlog:  # our own delivered, unacknowledged entries
            mine = self._read("0", block=None)
            self._own_backlog = bool(mine)
            return handled + self.handle(mine, again=True)
        return handled + self.handle(self._read(">", block=int(s.block_s * 1000)))

    def _read(self, start: str, block: int | None) -> list[Entry]:
        s = self.settings
        got = self.client.xreadgroup(s.group, self.name, {s.stream: start}, s.batch, block)
        return [e for e in got[0][1] if e[1]] if got else []

    def handle(self, entries: list[Entry], *, again: bool = False) -> int:
        """Apply, dead-letter and acknowledge `entries` (`again`: delivered before, so some
        may have failed, or ended a process, before). `BatchFailed` when events failed with
        a bug: those stay pending, everything else is acknowledged."""
        if not entries:
            return 0
        events, dead, event_entry = _parse(entries)
        if dead:
            self.applier.stats.rejected.labels("invalid").inc(len(dead))
        marked: list[bytes] = []
        settled: dict[bytes, str] = {}  # suspects, each settled already: entry -> error
        if again:
            events, suspects = self._drop_poison(events, entries, event_entry, dead)
            settled = self._apply_alone(suspects, entries, event_entry)
            marked = [event_entry[e.event_id] for e in events]
            self._mark(marked)
        try:
            refused, failed = self._apply(events)
        except (redis.RedisError, StoreUnavailable):
            self._take_back(marked)
            raise
        for event_id, reason in refused.items():
            dead.append((event_entry[event_id], _raw_of(entries, event_entry[event_id]), reason))
        failing = {event_entry[event_id]: error for event_id, error in failed.items()}
        done = [e[0] for e in entries if e[0] not in failing and e[0] not in settled]
        self._settle(dead, done, failing, counted=marked, forget=again)
        failing |= {entry_id: error for entry_id, error in settled.items() if error}
        if failing:
            first = next(iter(failing.values()))
            raise BatchFailed(f"{len(failing)} event(s) failed and stay pending: {first}")
        return len(entries)

    def _settle(
        self,
        dead: list[DeadEntry],
        done: list[bytes],
        failing: dict[bytes, str],
        counted: Collection[bytes] = (),
        forget: bool = True,
    ) -> None:
        """Dead-letter `dead`, acknowledge `done` (and, with `forget`, drop their counts),
        and count a failure for each of `failing` not `counted` (marked) already."""
        counts, errors = self.settings.failures
        with self.client.pipeline() as pipe:
            for entry_id, raw, reason in dead:
                fields = {"event": raw, "reason": reason, "entry": entry_id}
                pipe.xadd(self.settings.dead_letter, fields)  # type: ignore[arg-type]
            if done:
                pipe.xack(self.settings.stream, self.settings.group, *done)
                if forget:  # forget the failures of entries that are done now
                    pipe.hdel(counts, *done)
                    pipe.hdel(errors, *done)
            for entry_id, error in failing.items():
                if entry_id not in counted:
                    pipe.hincrby(counts, entry_id)
                pipe.hset(errors, entry_id, error)
            pipe.execute()

    def _apply_alone(
        self, suspects: list[Event], entries: list[Entry], event_entry: dict[str, bytes]
    ) -> dict[bytes, str]:
        """Apply each suspect alone, marked just before and settled just after, so that a
        process that dies on one leaves no mark on the others. Returns each suspect's
        entry -> its error ('' when it was applied or refused); a failing one stays pending."""
        settled: dict[bytes, str] = {}
        for event in suspects:
            entry_id = event_entry[event.event_id]
            self._mark([entry_id])
            try:
                refused, failed = self._apply([event])
            except (redis.RedisError, StoreUnavailable):
                self._take_back([entry_id])
                raise
            settled[entry_id] = failed.get(event.event_id, "")
            if settled[entry_id]:
                self._settle([], [], {entry_id: settled[entry_id]}, counted=[entry_id])
                continue
            reason = refused.get(event.event_id)
            gone = [(entry_id, _raw_of(entries, entry_id), reason)] if reason else []
            self._settle(gone, [entry_id], {})
        return settled

    def _mark(self, entry_ids: list[bytes]) -> None:
        """Count an attempt for each entry before applying it; see the module's docstring."""
        if not entry_ids:
            return
        counts, errors = self.settings.failures
        with self.client.pipeline() as pipe:
            for entry_id in entry_ids:
                pipe.hincrby(counts, entry_id)
                pipe.hsetnx(errors, entry_id, ENDED)
            pipe.execute()

    def _unmark(self, entry_ids: list[bytes]) -> None:
        counts, _ = self.settings.failures
        with self.client.pipeline() as pipe:
            for entry_id in entry_ids:
                pipe.hincrby(counts, entry_id, -1)
            pipe.execute()

    def _take_back(self, entry_ids: list[bytes]) -> None:
        """Undo the marks of an attempt an outage stopped: an outage is no failure. While
        Redis is down they wait for the next round."""
        try:
            self._unmark(entry_ids)
        except redis.RedisError:
            self._unsettled.extend(entry_ids)

    def _apply(self, events: list[Event]) -> tuple[dict[str, str], dict[str, str]]:
        """Apply `events`: (refused event id -> reason, failed event id -> error). After a
        failure that is no outage, each event is applied alone (catalogue events first, as
        in a batch), so that one bad apple holds back no other event."""
        try:
            return self.applier.apply(events, "stream").refused, {}
        except (redis.RedisError, StoreUnavailable):
            raise
        except Exception as exc:
            log.exception("event stream: applying %d event(s) failed", len(events))
            if len(events) == 1:
                return {}, {events[0].event_id: f"{type(exc).__name__}: {exc}"}
        refused: dict[str, str] = {}
        failed: dict[str, str] = {}
        for event in sorted(events, key=lambda e: not isinstance(e, CatalogueEvent)):
            try:
                refused |= self.applier.apply([event], "stream").refused
            except (redis.RedisError, StoreUnavailable):
                raise
            except Exception as exc:
                log.exception("event stream: applying event %s failed", event.event_id)
                failed[event.event_id] = f"{type(exc).__name__}: {exc}"
        return refused, failed

    def _drop_poison(
        self,
        events: list[Event],
        entries: list[Entry],
        event_entry: dict[str, bytes],
        dead: list[DeadEntry],
    ) -> tuple[list[Event], list[Event]]:
        """`events` less those whose entries failed `max_failures` times (they join `dead`
        with their last error, counted as rejected for 'poison'), as (never failed,
        suspects: failed or ended a process before)."""
        counts, errors = self.settings.failures
        ids = [event_entry[e.event_id] for e in events]
        if not ids:
            return events, []
        with self.client.pipeline() as pipe:
            pipe.hmget(counts, ids)
            pipe.hmget(errors, ids)
            failures, last = pipe.execute()
        limit = self.settings.max_failures
        fresh: list[Event] = []
        suspects: list[Event] = []
        for event, entry_id, n, error in zip(events, ids, failures, last, strict=True):
            if n is None or int(n) < limit:
                (fresh if n is None or int(n) <= 0 else suspects).append(event)
                continue
            reason = f"applying it failed {int(n)} times: {(error or b'').decode()}"
            dead.append((entry_id, _raw_of(entries, entry_id), reason))
            log.error("event stream: %s dead-lettered: %s", event.event_id, reason)
        if len(fresh) + len(suspects) < len(events):
            self.applier.stats.rejected.labels("poison").inc(
                len(events) - len(fresh) - len(suspects)
            )
        return fresh, suspects

    def run(self, stop: threading.Event) -> None:
        """Rounds until `stop` is set, pausing (up to 5 s) while Redis or a store is down."""
        pause = 0.1
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                self.step()
                pause = 0.1
            except (redis.RedisError, StoreUnavailable) as exc:
                log.warning("event stream: %s; trying again in %.1f s", exc, pause)
            except BatchFailed as exc:  # logged where each failed; they are tried again
                log.warning("event stream: %s; trying again in %.1f s", exc, pause)
            except Exception:  # a bug must not stop the consumer: its batch stays pending
                log.exception("event stream: applying a batch failed; trying again")
            else:
                continue
            self._own_backlog = True  # what was delivered before the error comes back
            stop.wait(pause)
            pause = min(MAX_PAUSE_S, pause * 2)


def append(client: redis.Redis, stream: str, events: list[Event]) -> None:
    """Append `events` to the stream, as `POST /events` does with Redis configured."""
    with unavailable_as("append events to the stream"), client.pipeline() as pipe:
        for event in events:
            pipe.xadd(stream, {"event": orjson.dumps(event.model_dump())})
        pipe.execute()


def pending_count(client: redis.Redis, settings: StreamSettings) -> int:
    """Entries delivered to the group and not acknowledged; -1 when Redis does not say."""
    try:
        info = client.xpending(settings.stream, settings.group)
    except redis.RedisError:
        return -1
    return int(info["pending"])


def lag_count(client: redis.Redis, settings: StreamSettings) -> int:
    """Entries in the stream not yet delivered to the group; -1 when Redis does not say."""
    try:
        groups = client.xinfo_groups(settings.stream)
    except redis.RedisError:
        return -1
    found = [g for g in groups if g["name"].decode() == settings.group]
    lag = found[0].get("lag") if found else None
    return int(lag) if lag is not None else -1


def _parse(entries: list[Entry]) -> tuple[list[Event], list[DeadEntry], dict[str, bytes]]:
    """The events of `entries`, the malformed ones to dead-letter, event id -> entry id."""
    events: list[Event] = []
    dead: list[DeadEntry] = []
    event_entry: dict[str, bytes] = {}
    for n, (entry_id, fields) in enumerate(entries):
        raw = fields.get(b"event", b"")
        parsed = _decode(raw, n)
        if isinstance(parsed, Rejection):
            dead.append((entry_id, raw, parsed.reason))
        else:
            events.append(parsed)
            event_entry[parsed.event_id] = entry_id
    return events, dead, event_entry


def _decode(raw: bytes, index: int) -> Event | Rejection:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection(index, None, f"the entry's event field is not JSON: {exc}")
    return parse_event(value, index)


def _raw_of(entries: list[Entry], entry_id: bytes) -> bytes:
    return next(fields.get(b"event", b"") for eid, fields in entries if eid == entry_id)
