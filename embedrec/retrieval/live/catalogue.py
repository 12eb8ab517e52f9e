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

from embedrec.embedders import InputError
from embedrec.ingestion.manifest import LiveEdits
from embedrec.ingestion.rows import Row
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.live.events import CatalogueEvent
from embedrec.retrieval.spaces import Space
from embedrec.stores.errors import StoreError, StoreUnavailable

EVENT_SPACES = ("two-tower", "text")
"""The spaces a catalogue event can embed an item for."""


class CatalogueWriter:
    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    def apply(self, events: Sequence[CatalogueEvent]) -> dict[str, str]:
        """Apply `events` in order to every space they concern; returns the reason of each
        event refused (by event id). A store that cannot be reached raises
        `StoreUnavailable`: nothing is acknowledged, and the batch is tried again."""
        refused: dict[str, str] = {}
        for name in EVENT_SPACES:
            if name in self.recommender.spaces:
                space = self.recommender.space(name)
                for event_id, reason in self._apply_to(space, events).items():
                    refused.setdefault(event_id, reason)
        return refused

    def _apply_to(self, space: Space, events: Sequence[CatalogueEvent]) -> dict[str, str]:
        store = space.failover.primary
        refused: dict[str, str] = {}
        edits: list[tuple[str, str]] = []
        for event in events:
            if event.op != "removed" and space.name == "text" and event.text is None:
                continue
            try:
                self._apply_one(space, event)
            except StoreUnavailable:
                raise
            except (InputError, StoreError, ValueError) as exc:
                refused[event.event_id] = f"{space.name} space: {exc}"
                continue
            edits.append((event.item_id, event.op))
        if edits:
            store.flush()
            with closing(LiveEdits.of(store.uri)) as book:
                book.record(edits)
        return refused

    def _apply_one(self, space: Space, event: CatalogueEvent) -> None:
        store = space.failover.primary
        if event.op == "removed":
            store.delete([event.item_id])
            return
        row = Row(0, event.item_id, event.text or "", dict(event.fields))
        vector = self.recommender.embed_rows(space, [row])
        store.upsert([event.item_id], vector, [dict(event.fields)])
