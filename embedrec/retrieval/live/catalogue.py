"""Catalogue events into the stores: an added or changed item is embedded with each space's
own embedder (the two-tower item tower from its fields, the text embedder from its `text`)
and upserted into the live generation the service serves; a removed one is deleted. Each
store is flushed once per batch, and the edits are recorded (`LiveEdits`, beside the
ingestion manifest) so that the next batch ingest neither redoes nor undoes them.

The image space takes no catalogue events (they carry no image): ingest images in batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing

import numpy as np

from embedrec.embedders import InputError
from embedrec.ingestion.manifest import LiveEdits
from embedrec.ingestion.rows import Row
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.events.models import CatalogueEvent
from embedrec.retrieval.spaces import Space
from embedrec.stores.errors import StoreError, StoreUnavailable

EVENT_SPACES = ("two-tower", "text")
"""The spaces a catalogue event can embed an item for."""


class CatalogueWriter:
    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    def apply(self, events: Sequence[CatalogueEvent]) -> dict[str, str]:
        """Apply `events` in order to every space they concern; returns the reason of each
        event refused (by event id). Every vector is computed before anything is written, so
        an event one space's embedder refuses changes no space. A store that cannot be
        reached raises `StoreUnavailable`: nothing is acknowledged, and the batch is tried
        again (applying it twice changes nothing)."""
        spaces = [self.recommender.space(n) for n in EVENT_SPACES if n in self.recommender.spaces]
        refused: dict[str, str] = {}
        vectors: dict[tuple[str, str], np.ndarray] = {}
        for space in spaces:
            for event in events:
                if event.op == "removed" or (space.name == "text" and event.text is None):
                    continue
                row = Row(0, event.item_id, event.text or "", dict(event.fields))
                try:
                    vectors[(space.name, event.event_id)] = self.recommender.embed_rows(
                        space, [row]
                    )
                except StoreUnavailable:
                    raise
                except (InputError, StoreError, ValueError) as exc:
                    refused.setdefault(event.event_id, f"{space.name} space: {exc}")
        kept = [e for e in events if e.event_id not in refused]
        for space in spaces:
            for event_id, reason in self._write(space, kept, vectors).items():
                refused.setdefault(event_id, reason)
        return refused

    def _write(
        self,
        space: Space,
        events: Sequence[CatalogueEvent],
        vectors: dict[tuple[str, str], np.ndarray],
    ) -> dict[str, str]:
        """Write `events` to the space's store; returns those it refused (another process
        writing the same FAISS directory, say: see docs/realtime.md)."""
        store = space.failover.primary
        edits: list[tuple[str, str]] = []
        refused: dict[str, str] = {}
        for event in events:
            key = (space.name, event.event_id)
            try:
                if event.op == "removed":
                    store.delete([event.item_id])
                elif key in vectors:
                    store.upsert([event.item_id], vectors[key], [dict(event.fields)])
                else:
                    continue
            except StoreUnavailable:
                raise
            except StoreError as exc:
                refused[event.event_id] = f"{space.name} store: {exc}"
                continue
            edits.append((event.item_id, event.op))
        if edits:
            store.flush()
            with closing(LiveEdits.of(store.uri)) as book:
                book.record(edits)
        return refused
