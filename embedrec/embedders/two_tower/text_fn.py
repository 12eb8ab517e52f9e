"""The text function the towers use when none is given: the packaged sentence embedder."""

from __future__ import annotations

from embedrec.embedders.cache import EmbeddingCache
from embedrec.embedders.cached import embed_cached
from embedrec.embedders.text import TextEmbedder
from embedrec.embedders.two_tower.features import TextFn


def default_text_fn() -> TextFn:
    """all-MiniLM-L6-v2 embeddings through the on-disk embedding cache."""
    embedder = TextEmbedder()
    cache = EmbeddingCache()
    return lambda texts: embed_cached(embedder, texts, cache)[0]
