"""Store URIs: `scheme:location?option=value&...`.

`faiss:./data/movies?index=HNSW32&metric=cosine`, `qdrant://localhost:6333/movies`,
`qdrant+local:./qdrant_data/movies`, `qdrant+memory:movies`, `qdrant+edge:./edge/movies`,
`pinecone://movies?namespace=prod`. Secrets never travel in a URI: a user-info part or an
option named like a key is refused, and the backends read them from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from embedrec.stores.errors import ConfigError

SECRET_OPTIONS = ("api_key", "apikey", "key", "token", "password", "secret")
PATH_SCHEMES = ("faiss", "qdrant+local", "qdrant+edge")
"""The schemes whose location is a filesystem path."""


@dataclass
class StoreURI:
    scheme: str
    location: str
    """What follows the scheme: `host:port/collection` for network schemes, a path otherwise."""
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    def pop(self, name: str, default: str | None = None) -> str | None:
        return self.options.pop(name, default)

    def pop_int(self, name: str, default: int | None = None) -> int | None:
        value = self.options.pop(name, None)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{self.raw}: option {name}={value!r} is not an integer") from None

    def pop_bool(self, name: str, default: bool = False) -> bool:
        value = self.options.pop(name, None)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.raw}: option {name}={value!r} is not a boolean")

    def done(self) -> None:
        """Raise on options nobody consumed, so that a typo is never silently ignored."""
        if self.options:
            raise ConfigError(f"{self.raw}: unknown option(s) {', '.join(sorted(self.options))}")


def parse_uri(uri: str) -> StoreURI:
    if not isinstance(uri, str) or ":" not in uri:
        raise ConfigError(
            f"{uri!r} is not a store URI (expected scheme:location, e.g. faiss:./data)"
        )
    scheme, rest = uri.split(":", 1)
    scheme = scheme.lower()
    location, _, query = rest.partition("?")
    if location.startswith("//"):
        netloc = urlsplit(f"{scheme}:{location}").netloc
        if "@" in netloc:
            raise ConfigError(
                f"{scheme}:// URIs may not carry credentials; set the API key in the environment"
            )
        location = location[2:]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigError(f"{uri!r}: bad option string {query!r}: {exc}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in SECRET_OPTIONS:
            raise ConfigError(
                f"{scheme} URIs may not carry {name!r}: secrets come from the environment "
                "(QDRANT_API_KEY, PINECONE_API_KEY)"
            )
        if name in options:
            raise ConfigError(f"{uri!r}: option {name!r} given twice")
        options[name] = value
    redacted = f"{scheme}:{rest.split('?', 1)[0]}" + (f"?{query}" if query else "")
    return StoreURI(scheme, location, options, raw=redacted)


def located_in(uri: str, folder: Path) -> str:
    """`uri` with its relative filesystem path (PATH_SCHEMES) taken from `folder`, the way a
    config file's relative paths are taken from its folder; other URIs as they are."""
    scheme, colon, rest = uri.partition(":")
    location, question, query = rest.partition("?")
    relative = location and not location.startswith(("/", "~"))
    if not colon or scheme.lower() not in PATH_SCHEMES or not relative:
        return uri
    return f"{scheme}:{os.path.normpath(folder / location)}{question}{query}"
