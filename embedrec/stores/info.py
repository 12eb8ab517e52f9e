"""`StoreInfo`: what a store says about itself, kept with the store rather than in a user's
cache, so that a copied, shared or served store still knows which embedder built it.

It is a small JSON object each backend persists in its own place (the FAISS manifest,
Qdrant's collection metadata, the edge shard's `embedrec.json`, a reserved Pinecone record).
Everything in it is readable by whoever can read the store: no secrets, so a spec that
carries credentials (a URL with a password) is refused, as are search defaults named like one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from embedrec.stores.errors import ConfigError, CorruptStore
from embedrec.stores.text import encodable

INFO_FORMAT = 1
MAX_TEXT = 1000
"""The longest spec, name or default value kept: a description, not a payload."""
MAX_DEFAULTS = 64
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")
"""The similarity metrics every store supports (here, below `base`, which imports this)."""
SECRET_WORDS = re.compile(r"api[_-]?key|token|secret|password|credential", re.IGNORECASE)
USERINFO = re.compile(r"://[^/@\s]*@")
"""`scheme://user:password@host`: credentials inside a spec."""

DefaultValue = str | int | float | bool


class EmbedderMismatch(ConfigError):
    """An embedder other than the one that built the store, for a query or a write."""


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ConfigError(f"store info {name}: {value!r} is not a text of 1-{MAX_TEXT} characters")
    if not encodable(value):
        raise ConfigError(f"store info {name}: {value!a} is not valid Unicode text")
    return value


def _default(name: str, value: Any) -> DefaultValue:
    if SECRET_WORDS.search(name):
        raise ConfigError(f"store info search default {name!r}: secrets never go in a store")
    if isinstance(value, str):
        return _text(f"search default {name!r}", value)
    if isinstance(value, bool | int) and not (isinstance(value, int) and abs(value) > 2**53):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ConfigError(
        f"store info search default {name!r}: {value!r} is not a str, bool, int "
        "(within +-2**53) or finite float"
    )


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Which embedder built the store (`embedder`: the spec `get_embedder` takes;
    `embedder_name`: its model fingerprint, `Embedder.name`), the vectors' `dim`, `modality`
    and `metric`, and `search_defaults` (search params calibrated for this store)."""

    embedder: str
    embedder_name: str
    dim: int
    modality: str
    metric: str
    search_defaults: Mapping[str, DefaultValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text("embedder", self.embedder)
        if USERINFO.search(self.embedder):
            raise ConfigError(
                "store info embedder: the spec carries credentials (user@ in a URL); "
                "secrets never go in a store"
            )
        _text("embedder_name", self.embedder_name)
        _text("modality", self.modality)
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"store info dim: {self.dim!r} is not a positive integer")
        if self.metric not in METRICS:
            raise ConfigError(f"store info metric: {self.metric!r} is not one of {METRICS}")
        if not isinstance(self.search_defaults, Mapping):
            raise ConfigError(f"store info search_defaults: {self.search_defaults!r} is not a map")
        if len(self.search_defaults) > MAX_DEFAULTS:
            raise ConfigError(f"store info search_defaults: more than {MAX_DEFAULTS} entries")
        checked = {
            _text("search default name", k): _default(k, v) for k, v in self.search_defaults.items()
        }
        object.__setattr__(self, "search_defaults", MappingProxyType(checked))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INFO_FORMAT,
            "embedder": self.embedder,
            "embedder_name": self.embedder_name,
            "dim": self.dim,
            "modality": self.modality,
            "metric": self.metric,
            "search_defaults": dict(self.search_defaults),
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> StoreInfo:
        """Read what `to_json` wrote; anything else is a damaged store (`CorruptStore`)."""
        if not isinstance(raw, Mapping):
            raise CorruptStore(f"{where}: the store info is {type(raw).__name__}, not an object")
        if raw.get("format") != INFO_FORMAT:
            raise CorruptStore(
                f"{where}: store info format {raw.get('format')!r}, this embedrec reads "
                f"{INFO_FORMAT}"
            )
        names = ("embedder", "embedder_name", "dim", "modality", "metric", "search_defaults")
        unknown = sorted(set(raw) - {"format", *names})
        if unknown:
            raise CorruptStore(f"{where}: the store info has unknown fields {unknown}")
        try:
            return cls(**{k: raw[k] for k in names if k in raw})
        except (ConfigError, TypeError) as exc:
            raise CorruptStore(f"{where}: damaged store info: {exc}") from None

    def check_embedder(self, spec: str, embedder_name: str, where: str) -> None:
        """Refuse an embedder given elsewhere (a flag, a config) that is another model than
        the one that built the store. The fingerprint decides, since specs may spell one
        model differently (`text` and `text:all-MiniLM-L6-v2`)."""
        if embedder_name != self.embedder_name:
            raise EmbedderMismatch(
                f"{where} was built by embedder {self.describe()}, not {spec!r} "
                f"({embedder_name}): its vectors are not comparable; use {self.embedder!r} "
                "or another store"
            )

    def describe(self) -> str:
        return f"{self.embedder!r} ({self.embedder_name}, {self.dim}-d {self.modality})"
