"""What runs on a Ray worker: an embedder built from its spec, embedding one batch of inputs;
a store opened from its URI, taking one part of a batch.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from typing import Any

import numpy as np

from embedrec.embedders import InputError, get_embedder
from embedrec.ingestion.pipeline import upsert_records
from embedrec.stores import VectorStore, open_store

CHUNK = 256
"""Inputs embedded together on a worker: an input the embedder refuses costs the retry of
this many, not of the whole batch."""


def embed_rows(embedder: Any, items: list[Any]) -> tuple[np.ndarray, list[str]]:
    """Vectors for `items`, and per item the reason the embedder refused it ("" when it
    did not; its vector is then zeros), as the pipeline's `process` rejects row by row."""
    out = np.zeros((len(items), embedder.dim), dtype=np.float32)
    errors = [""] * len(items)
    for start in range(0, len(items), CHUNK):
        todo = list(range(start, min(start + CHUNK, len(items))))
        while todo:
            try:
                vectors = embedder.embed([items[i] for i in todo])
            except InputError as exc:
                errors[todo.pop(exc.index)] = exc.reason
                continue
            if vectors.shape != (len(todo), embedder.dim):
                raise ValueError(
                    f"embedder {embedder.name} returned shape {vectors.shape} for "
                    f"{len(todo)} items of dim {embedder.dim}"
                )
            out[todo] = vectors
            break
    return out, errors


@lru_cache(maxsize=2)
def _embedder(spec: str, options: tuple[tuple[str, Any], ...]) -> Any:
    """One embedder per worker process and spec: Ray reuses its worker processes, so a
    model loads once per worker, not once per batch."""
    return get_embedder(spec, **dict(options))


def embed_batch(
    batch: dict[str, np.ndarray], spec: str, options: tuple[tuple[str, Any], ...], pickled: bool
) -> dict[str, np.ndarray]:
    """A Ray Data `map_batches` function: the batch's `input` column embedded, by `pos`,
    with the reason for each input the embedder refused in `error`."""
    items = batch["input"].tolist()
    if pickled:
        items = [pickle.loads(item) for item in items]
    vectors, errors = embed_rows(_embedder(spec, options), items)
    return {"pos": batch["pos"], "vector": vectors, "error": np.asarray(errors, dtype=object)}


class EmbedActor:
    """The same as a `map_batches` callable class: one per actor (a GPU each)."""

    def __init__(self, spec: str, options: tuple[tuple[str, Any], ...], pickled: bool) -> None:
        self.args = (spec, options, pickled)
        _embedder(spec, options)  # the model loads when the actor starts

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return embed_batch(batch, *self.args)


@lru_cache(maxsize=4)
def _store(uri: str) -> VectorStore:
    """One open store per worker process and URI (a client and its connections)."""
    return open_store(uri)


def write_part(
    uri: str, ids: list[str], vectors: np.ndarray, metadata: list[dict]
) -> dict[int, str]:
    """A Ray task: upsert records into the store at `uri` (a server's, which every worker
    reaches); returns why each record it refused was refused, by index."""
    return upsert_records(_store(uri), ids, vectors, metadata)
