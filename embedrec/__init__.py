"""embedrec: embedding-based recommendation and retrieval over interchangeable vector stores."""

from embedrec.stores import (
    AuthError,
    Capabilities,
    ConfigError,
    CorruptStore,
    DimensionError,
    FilterError,
    Hit,
    Hits,
    IdError,
    MetadataError,
    Record,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreUnavailable,
    VectorError,
    VectorStore,
    matches,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Capabilities",
    "ConfigError",
    "CorruptStore",
    "DimensionError",
    "FilterError",
    "Hit",
    "Hits",
    "IdError",
    "MetadataError",
    "Record",
    "StoreError",
    "StoreLocked",
    "StoreNotFound",
    "StoreUnavailable",
    "VectorError",
    "VectorStore",
    "__version__",
    "matches",
    "open_store",
]
