"""Catalogue events into the stores: an added or changed item is embedded with each space's
own embedder (the two-tower item tower from its fields, the text embedder from its `text`)
and upserted into the live generation the service serves; a removed one is deleted. Each
store is flushed once per batch, and the edits are recorded (`LiveEdits`, beside the
ingestion manifest) so that the next batch ingest neither redoes nor undoes them.

The image space takes no catalogue events (they carry no image): ingest images in batch.

Several processes (each worker's consumer, `embedrec stream`) may write one FAISS store: they
take turns (stores/lifecycle/writers.py), each loading what the others committed before it
writes and giving the folder's writer lock up after; every process loads the others' commits
within `[stream] refresh_s` (`Live`). See docs/realtime.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from typing import TypeVar

import numpy as np

from embedrec.embedders import InputError
from embedrec.ingestion.manifest import LiveEdits
from embedrec.ingestion.rows import Row
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.events.models import CatalogueEvent
from embedrec.retrieval.spaces import Space
from embedrec.stores import VectorStore, open_existing
from embedrec.stores.errors import StoreError, StoreLocked, StoreUnavailable
from embedrec.stores.faiss.store import FaissStore
from embedrec.stores.lifecycle.aliases import alias_book
from embedrec.stores.lifecycle.pointer import alias_of
from embedrec.stores.lifecycle.writers import in_turn

T = TypeVar("T")
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
        """Write `events` to the space's store; returns those it refused. Then, should the
        store's alias have moved to a generation a rebuild swapped in meanwhile, write that
        one too (the rebuild carried only what was recorded before its swap)."""
        store = space.failover.primary
        refused, edits = _in_turn(lambda: _edit(store, space.name, events, vectors))
        if not edits:
            return refused
        with closing(LiveEdits.of(store.uri)) as book:
            book.record(edits)
        moved = _moved(store.uri)
        if moved is not None:

            def write_live() -> list[tuple[str, str]]:
                with open_existing(moved) as live:
                    return _edit(live, space.name, events, vectors)[1]

            with closing(LiveEdits.of(moved)) as book:
                book.record(_in_turn(write_live))
        return refused


def _edit(
    store: VectorStore,
    space: str,
    events: Sequence[CatalogueEvent],
    vectors: dict[tuple[str, str], np.ndarray],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Write `events` into `store` and flush it: (refused event id -> reason, the edits).
    A FAISS store loads first what other processes committed, and gives its folder's writer
    lock up after (`StoreLocked`, before anything is written, while another holds it)."""
    faiss = isinstance(store, FaissStore)
    if faiss:
        store.sync()
    edits: list[tuple[str, str]] = []
    refused: dict[str, str] = {}
    for event in events:
        key = (space, event.event_id)
        try:
            if event.op == "removed":
                store.delete([event.item_id])
            elif key in vectors:
                store.upsert([event.item_id], vectors[key], [dict(event.fields)])
            else:
                continue
        except (StoreUnavailable, StoreLocked):
            raise
        except StoreError as exc:
            refused[event.event_id] = f"{space} store: {exc}"
            continue
        edits.append((event.item_id, event.op))
    if faiss:
        store.release()  # flushes
    elif edits:
        store.flush()
    return refused, edits


def _in_turn(write: Callable[[], T]) -> T:
    """`write` in its turn among the store's writers; one that waited too long is an outage
    (the batch is tried again), not a refusal of its events."""
    try:
        return in_turn(write)
    except StoreLocked as exc:
        raise StoreUnavailable(f"waited too long for another writer: {exc}") from exc


def _moved(uri: str) -> str | None:
    """The live generation's URI when `uri` is a generation of an alias that no longer
    points at it; else None."""
    found = alias_of(uri)
    if found is None:
        return None
    alias, name = found
    live = alias_book(alias).live_token()
    return None if live in (None, name) else alias_book(alias).generation(live).uri
