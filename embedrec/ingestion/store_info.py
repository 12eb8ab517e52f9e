"""Which embedder built a store, as the store itself says (`VectorStore.info`).

`ingest` describes the store when it first writes to it, and refuses to write into a store
another embedder built; `query`, `serve` and the Python client read the description back to
embed their queries with the same model. Stores written before stores carried it have the
embedder recorded only in the cache directory of whoever ingested them: that record is read
as a fallback, and `ingest` moves it into the store on its next write.
"""

from __future__ import annotations

from typing import Any

from embedrec.embedders import Embedder, get_embedder
from embedrec.ingestion.manifest import recorded_embedder
from embedrec.stores import ConfigError, StoreInfo, VectorStore


def store_info(store: VectorStore) -> StoreInfo | None:
    """The store's description; for a store older than descriptions, the one the cache
    recorded for it (None when neither exists)."""
    info = store.info
    if info is not None:
        return info
    legacy = recorded_embedder(store.uri)
    if not isinstance(legacy, dict) or legacy.get("dim") != store.dim:
        return None  # none, or one of another store once at this location
    try:
        return StoreInfo(
            embedder=legacy["embedder"],
            embedder_name=legacy["name"],
            dim=store.dim,
            modality=legacy["modality"],
            metric=store.metric,
        )
    except (KeyError, TypeError, ConfigError):
        return None  # a damaged record: the cache is not the store


def describe(store: VectorStore, spec: str, embedder: Embedder, known: StoreInfo | None) -> None:
    """Record `embedder` in the store, keeping the calibrated search defaults of what was
    `known` of it (`store_info` when it was opened, after `check_embedder`)."""
    store.set_info(
        StoreInfo(
            embedder=spec,
            embedder_name=embedder.name,
            dim=store.dim,
            modality=embedder.modality,
            metric=store.metric,
            search_defaults=known.search_defaults if known is not None else {},
        )
    )


def embedder_for(
    store: VectorStore, spec: str | None = None, *, default: str | None = None, **kwargs: Any
) -> Embedder:
    """The embedder that built `store` (`kwargs` such as `device` go to it). A `spec` given
    (a flag, a serve config) must name the same model: `EmbedderMismatch` names both. For a
    store that does not say, `spec`, else `default`, else a ValueError asking for one."""
    known = store_info(store)
    spec = spec or (known.embedder if known is not None else default)
    if spec is None:
        raise ValueError(
            f"{store.uri} does not say which embedder built it (it was not written by "
            "embedrec ingest): pass --embedder"
        )
    embedder = get_embedder(spec, **kwargs)
    if known is not None:
        known.check_embedder(spec, embedder.name, store.uri)
    return embedder
