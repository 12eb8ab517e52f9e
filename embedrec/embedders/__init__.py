"""Embedders: text, image and learned item vectors behind one small protocol.

A spec is `KIND[:ARG][?OPTION=VALUE&...]`: `text`, `text:PATH_OR_HUB_NAME`,
`text:org/model?revision=abc`, `image`, `image:efficientnet-lite0?image_size=112`, `hash:64`
(a hashed bag of words with no model, for benchmarks and tests; hash.py). Options
are constructor keywords (digits become ints), so a spec alone rebuilds the same embedder,
e.g. at query time. Any other kind `K` (e.g. "two-tower:PATH") is resolved by importing
`embedrec.embedders.K` (dashes as underscores) and calling its
`from_spec(arg: str | None, **kw) -> Embedder`, so a new embedder needs no edit here.
Heavy libraries (torch, sentence-transformers) load on first use, not on import.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import parse_qsl

from embedrec.embedders.base import Embedder, InputError, Modality, resolve_device
from embedrec.embedders.cache import EmbeddingCache
from embedrec.embedders.cached import content_key, embed_cached
from embedrec.embedders.text import TextEmbedder

_KIND = re.compile(r"^[a-z][a-z0-9-]*$")


def _spec_options(spec: str, query: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=True)
    except ValueError:
        raise ValueError(f"bad embedder spec {spec!r}: options must be KEY=VALUE&...") from None
    return {k: int(v) if v.isdigit() else v for k, v in pairs}


def get_embedder(spec: str, **kw: Any) -> Embedder:
    """Build an embedder from its spec (see the module docstring); `kw` are further
    constructor keywords and may not repeat an option of the spec."""
    head, _, query = spec.partition("?")
    kind, sep, arg = head.partition(":")
    argument = arg if sep and arg else None
    options = _spec_options(spec, query) if query else {}
    if clash := sorted(options.keys() & kw.keys()):
        raise ValueError(f"embedder spec {spec!r} and keywords both set {', '.join(clash)}")
    kw |= options
    if not _KIND.match(kind):
        raise ValueError(f"bad embedder spec {spec!r}: expected KIND[:ARG][?KEY=VALUE&...]")
    try:
        return _build(kind, argument, spec, kw)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ValueError(f"bad embedder spec {spec!r}: {exc}") from None


def _build(kind: str, argument: str | None, spec: str, kw: dict[str, Any]) -> Embedder:
    if kind == "text":
        return TextEmbedder(argument, **kw)
    if kind == "image":
        # Pillow comes with the optional extra 'image'
        from embedrec.embedders.image import ImageEmbedder

        return ImageEmbedder(argument, **kw) if argument else ImageEmbedder(**kw)
    module_name = f"{__name__}.{kind.replace('-', '_')}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ValueError(f"unknown embedder {kind!r} in {spec!r}; known: text, image") from None
    if not hasattr(module, "from_spec"):
        raise ValueError(f"{module_name} has no from_spec(arg, **kw): cannot build {spec!r}")
    return module.from_spec(argument, **kw)


__all__ = [
    "Embedder",
    "EmbeddingCache",
    "InputError",
    "Modality",
    "content_key",
    "embed_cached",
    "get_embedder",
    "resolve_device",
]
