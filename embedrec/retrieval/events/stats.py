"""What the event path counts, in a Prometheus registry of its own that `/metrics` (and
`embedrec stream --metrics-port`) export: events consumed and rejected, pending stream
entries (the consumer's lag), apply latency, and freshness (from an event's time to the
first recommendation that reflects it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from embedrec.retrieval.history import Interaction

APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 60.0)
REFLECTED_USERS = 100_000
"""Users whose latest reflected event time is remembered (then the memory starts over)."""


class LiveStats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "embedrec_events_consumed", "Events applied, by kind and where they came from.",
            ["kind", "source"], registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "embedrec_events_rejected",
            "Events refused: 'invalid' (malformed), 'apply' (the item or store refused it) or "
            "'poison' (applying it failed with an error max_failures times).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "embedrec_events_duplicate", "Events seen again after being applied (no effect).",
            registry=r,
        )  # fmt: skip
        self.unknown_item = Counter(
            "embedrec_events_unknown_item",
            "Interactions with an item the catalogue lacks, held until it exists.",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "embedrec_events_apply_seconds", "Time to apply one batch of events.",
            buckets=APPLY_BUCKETS, registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "embedrec_events_pending",
            "Stream entries delivered to the consumer group and not yet acknowledged (lag).",
            registry=r,
        )
        self.lag = Gauge(
            "embedrec_events_lag",
            "Stream entries not yet delivered to the consumer group.",
            registry=r,
        )
        self.freshness = Histogram(
            "embedrec_event_freshness_seconds",
            "From an interaction's event time to the first recommendation that reflects it.",
            buckets=FRESHNESS_BUCKETS, registry=r,
        )  # fmt: skip
        self._reflected: dict[str, float] = {}
        self._lock = threading.Lock()

    def watch_stream(self, pending: Callable[[], int], lag: Callable[[], int]) -> None:
        """Read the stream's pending and undelivered counts at each scrape (-1 where they
        cannot be read)."""
        self.pending.set_function(pending)
        self.lag.set_function(lag)

    def reflected(self, user_id: str, live: Sequence[Interaction]) -> None:
        """A recommendation for `user_id` reflected `live`: observe the freshness of each
        entry newer than those this process saw reflected before."""
        if not live:
            return
        now = time.time()
        with self._lock:
            seen = self._reflected.get(user_id, -float("inf"))
            newest = max(i.timestamp or 0.0 for i in live)
            if newest <= seen:
                return
            if len(self._reflected) >= REFLECTED_USERS:
                self._reflected.clear()
            self._reflected[user_id] = newest
        for entry in live:
            if entry.timestamp is not None and entry.timestamp > seen:
                self.freshness.observe(max(0.0, now - entry.timestamp))
