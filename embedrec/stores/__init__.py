"""Vector stores behind one interface, opened by URI.

Backends are imported only when their scheme is used, so that `import embedrec` stays
fast and an uninstalled extra (qdrant, pinecone) fails only for the scheme that needs it.
"""

from __future__ import annotations

import importlib

from embedrec.stores.base import METRICS, Capabilities, Hit, Hits, Record, VectorStore
from embedrec.stores.errors import (
    AliasBusy,
    AuthError,
    ConfigError,
    CorruptStore,
    DimensionError,
    FilterError,
    GenerationChanged,
    IdError,
    MetadataError,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreUnavailable,
    VectorError,
)
from embedrec.stores.filters import matches, parse_filter
from embedrec.stores.info import EmbedderMismatch, StoreInfo
from embedrec.stores.lifecycle.pointer import resolve as resolve_path_alias
from embedrec.stores.uri import StoreURI, parse_uri

REGISTRY: dict[str, tuple[str, str, str]] = {
    # scheme: (module, class, the extra that installs its client)
    "faiss": ("embedrec.stores.faiss", "FaissStore", "embedrec"),
    "qdrant": ("embedrec.stores.qdrant.client_engine", "QdrantClientStore", "embedrec[qdrant]"),
    "qdrant+local": (
        "embedrec.stores.qdrant.client_engine",
        "QdrantClientStore",
        "embedrec[qdrant]",
    ),
    "qdrant+memory": (
        "embedrec.stores.qdrant.client_engine",
        "QdrantClientStore",
        "embedrec[qdrant]",
    ),
    "qdrant+edge": ("embedrec.stores.qdrant.edge_engine", "QdrantEdgeStore", "embedrec[qdrant]"),
    "pinecone": ("embedrec.stores.pinecone", "PineconeStore", "embedrec[pinecone]"),
}


def open_store(
    uri: str, *, dim: int | None = None, metric: str | None = None, **options: object
) -> VectorStore:
    """Open the store at `uri`, or create it when it does not exist (then `dim` is needed;
    `metric` defaults to cosine). A `dim` or `metric` that contradicts an existing store
    raises `DimensionError` / `ConfigError`. Keyword options are merged with the URI's.
    An alias (aliases.py) opens its live generation."""
    parsed = parse_uri(uri)
    live = resolve_path_alias(parsed)  # an alias directory: open its live generation
    if live is not None:
        return open_store(live, dim=dim, metric=metric, **options)
    if parsed.scheme not in REGISTRY:
        raise ConfigError(
            f"unknown store scheme {parsed.scheme!r} in {parsed.raw!r}; "
            f"known: {', '.join(sorted(REGISTRY))}"
        )
    if metric is not None and metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise DimensionError(f"dim must be a positive integer, got {dim!r}")
    parsed.options.update({k: str(v) for k, v in options.items()})
    module_name, class_name, extra = REGISTRY[parsed.scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{parsed.scheme} stores need {exc.name}: pip install '{extra}'") from exc
    return getattr(module, class_name).open(parsed, dim=dim, metric=metric)


def open_existing(uri: str, **options: object) -> VectorStore:
    """Open a store that must already exist, to query or serve it. A missing one raises
    `StoreNotFound` saying to build it: `open_store`'s own message advises passing `dim`,
    which a command that only reads has no use for."""
    try:
        return open_store(uri, **options)
    except StoreNotFound as exc:
        # late: loads pydantic, which opening a store does not need
        from embedrec.common.config import named_by

        raise StoreNotFound(
            f"no store at {uri}{named_by(uri)}: build it with `embedrec ingest`"
        ) from exc


__all__ = [
    "METRICS",
    "REGISTRY",
    "AliasBusy",
    "AuthError",
    "Capabilities",
    "ConfigError",
    "CorruptStore",
    "DimensionError",
    "EmbedderMismatch",
    "FilterError",
    "GenerationChanged",
    "Hit",
    "Hits",
    "IdError",
    "MetadataError",
    "Record",
    "StoreError",
    "StoreInfo",
    "StoreLocked",
    "StoreNotFound",
    "StoreURI",
    "StoreUnavailable",
    "VectorError",
    "VectorStore",
    "matches",
    "open_existing",
    "open_store",
    "parse_filter",
    "parse_uri",
]


def missing_backend(scheme: str) -> str | None:
    """Why the backend of `scheme` cannot be used here (its module does not import: a
    missing extra, named with its install command), or None when it can. Lets the bench and
    the leaderboard skip such a store with the reason instead of failing the run. An unknown
    scheme raises `ConfigError`."""
    if scheme not in REGISTRY:
        raise ConfigError(f"unknown store scheme {scheme!r}; known: {', '.join(sorted(REGISTRY))}")
    module, _, extra = REGISTRY[scheme]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} does not import ({exc}); pip install '{extra}'"
    return None
