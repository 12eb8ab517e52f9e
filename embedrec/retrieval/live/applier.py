"""Applying a batch of events: catalogue events first (so that an interaction with an item
added in the same batch finds it), then interactions into the live histories. An interaction
with an item the catalogue does not hold is held, and counted, until a catalogue event adds
the item; only then does it enter the history."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from embedrec.retrieval.client import Recommender
from embedrec.retrieval.events.histories import LiveHistories
from embedrec.retrieval.events.models import CatalogueEvent, Event, InteractionEvent
from embedrec.retrieval.events.stats import LiveStats
from embedrec.retrieval.live.catalogue import CatalogueWriter


@dataclass
class Applied:
    new: int = 0
    """Interactions that entered a history for the first time."""
    duplicates: int = 0
    held: int = 0
    """Interactions with an item the catalogue lacks, held until it exists."""
    refused: dict[str, str] = field(default_factory=dict)
    """Catalogue events an embedder or store refused: event id -> reason."""


class KnownItems:
    """Which items the recommendable catalogue holds: the two-tower space's store (else the
    first space's), asked once per item and remembered for `max_age_s` (or until this
    process's event removes it): another process's removal is seen within that time."""

    def __init__(self, recommender: Recommender, max_age_s: float) -> None:
        self.recommender = recommender
        spaces = recommender.spaces
        self.space = "two-tower" if "two-tower" in spaces else spaces[0]
        self.max_age_s = max_age_s
        self._known: set[str] = set()
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def of(self, ids: Iterable[str]) -> set[str]:
        wanted = set(ids)
        with self._lock:
            if time.monotonic() - self._since > self.max_age_s:
                self._known, self._since = set(), time.monotonic()
            unknown = list(wanted - self._known)
        if unknown:
            fo = self.recommender.space(self.space).failover
            found = {r.id for r in fo.call("fetch", lambda s: s.fetch(unknown))}
            with self._lock:
                self._known |= found
        with self._lock:
            return wanted & self._known

    def changed(self, event: CatalogueEvent) -> None:
        with self._lock:
            if event.op == "removed":
                self._known.discard(event.item_id)
            else:
                self._known.add(event.item_id)


class EventApplier:
    def __init__(
        self,
        recommender: Recommender,
        histories: LiveHistories,
        stats: LiveStats | None = None,
        known_for_s: float = 0.5,
    ) -> None:
        """`known_for_s`: how long an item found in the catalogue is taken as there
        without asking the store again (`[stream] refresh_s`)."""
        self.histories = histories
        self.catalogue = CatalogueWriter(recommender)
        self.items = KnownItems(recommender, known_for_s)
        self.stats = stats or LiveStats()

    def apply(self, events: Sequence[Event], source: str) -> Applied:
        """Apply `events`; idempotent on event id. Raises `StoreUnavailable` (the histories'
        Redis or a store) with nothing acknowledged: the caller tries the batch again."""
        started = time.perf_counter()
        out = Applied()
        catalogue = [e for e in events if isinstance(e, CatalogueEvent)]
        interactions = [e for e in events if isinstance(e, InteractionEvent)]
        ready: list[InteractionEvent] = []
        if catalogue:
            out.refused = self.catalogue.apply(catalogue)
            for event in catalogue:
                if event.event_id not in out.refused:
                    self.items.changed(event)
                    if event.op != "removed":
                        ready += self.histories.release(event.item_id)
        known = self.items.of(e.item_id for e in interactions)
        held = [e for e in interactions if e.item_id not in known]
        if held:
            self.histories.park(held)
            out.held = len(held)
            self.stats.unknown_item.inc(len(held))
        ready += [e for e in interactions if e.item_id in known]
        out.new = self.histories.add(ready)
        out.duplicates = len(ready) - out.new
        self._count(source, out, len(catalogue), time.perf_counter() - started)
        return out

    def _count(self, source: str, out: Applied, catalogue: int, seconds: float) -> None:
        stats = self.stats
        stats.apply_seconds.observe(seconds)
        if out.new:
            stats.consumed.labels("interaction", source).inc(out.new)
        if catalogue - len(out.refused):
            stats.consumed.labels("catalogue", source).inc(catalogue - len(out.refused))
        if out.refused:
            stats.rejected.labels("apply").inc(len(out.refused))
        if out.duplicates:
            stats.duplicates.inc(out.duplicates)
