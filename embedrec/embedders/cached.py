"""Embedding through the cache: each input's content key (a sha256 of the embedder's name
and the content the vector depends on), and `embed_cached`, which embeds only the inputs
neither the cache (cache.py) nor the caller's write-behind buffers (keyed.py) hold."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.embedders.base import Embedder, InputError
from embedrec.embedders.cache import EmbeddingCache
from embedrec.embedders.keyed import KEY, VectorBuffer, digests_of, first_found, hex_of, prefixes

TEXT_TAG = b"text\0"
"""What a text's UTF-8 follows in its key (`_item_bytes`; `content_digests` hashes it once
for a batch of texts)."""


def _item_bytes(item: Any, modality: str, index: int) -> bytes:
    """The content an embedding depends on. For images, a path and the raw bytes of the same
    file give the same key; for text, the UTF-8 string."""
    if isinstance(item, str) and modality != "image":
        try:
            return TEXT_TAG + item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(index, f"text is not valid Unicode: {exc}") from None
    if isinstance(item, (str, os.PathLike)):
        try:
            return b"file\0" + Path(item).read_bytes()
        except FileNotFoundError:
            raise InputError(index, f"file {os.fspath(item)!r} not found") from None
        except OSError as exc:
            raise InputError(index, f"cannot read file {os.fspath(item)!r}: {exc}") from None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return b"file\0" + bytes(item)
    if isinstance(item, np.ndarray):
        head = f"array\0{item.dtype.str}{item.shape}\0".encode()
        return head + np.ascontiguousarray(item).tobytes()
    if type(item).__module__.startswith("PIL."):
        return f"pil\0{item.mode}{item.size}\0".encode() + item.tobytes()
    try:
        return b"json\0" + json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        reason = f"cannot hash a {type(item).__name__} for the cache: {exc}"
        raise InputError(index, reason) from None


def content_key(embedder_name: str, item: Any, modality: str = "text", index: int = 0) -> str:
    """sha256 of the embedder's name and the item's content (hex)."""
    h = hashlib.sha256(embedder_name.encode("utf-8") + b"\0")
    h.update(_item_bytes(item, modality, index))
    return h.hexdigest()


def content_digests(embedder_name: str, items: Sequence[Any], modality: str = "text") -> np.ndarray:
    """Each item's `content_key` as a 32-byte digest (an array of `KEY`): the name hashed
    once, and with it the tag of text where every item is text (a copy and an update an
    item, no call to `_item_bytes`)."""
    named = hashlib.sha256(embedder_name.encode("utf-8") + b"\0")
    if modality != "image" and set(map(type, items)) <= {str}:
        texts = named.copy()
        texts.update(TEXT_TAG)
        try:
            return _digests(texts, map(str.encode, items))
        except UnicodeEncodeError:
            pass  # `_item_bytes` names the text
    return _digests(named, (_item_bytes(item, modality, i) for i, item in enumerate(items)))


def _digests(named: Any, contents: Iterable[bytes]) -> np.ndarray:
    """The digest of each of `contents` after what `named` (a sha256) has hashed."""
    digests: list[bytes] = []
    for content in contents:
        h = named.copy()
        h.update(content)
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype=KEY)


def content_keys(embedder_name: str, items: Sequence[Any], modality: str = "text") -> list[str]:
    """`[content_key(embedder_name, item, modality, i) ...]`."""
    return hex_of(content_digests(embedder_name, items, modality))


Unwritten = Sequence[VectorBuffer]
"""Vectors computed and not yet in the cache: buffers looked up in order, the first taking
new vectors."""


def embed_cached(
    embedder: Embedder,
    items: Sequence[Any],
    cache: EmbeddingCache,
    chunk_size: int = 1024,
    *,
    unwritten: Unwritten | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for `items` in order, and how many came from the cache. Only the misses are
    embedded (a duplicate within `items` once, in order of first appearance), in chunks
    that are cached as they finish, so an interrupted call keeps what it computed.

    `unwritten` are write-behind buffers: vectors computed but not yet in `cache`. They are
    looked up before the cache, and new vectors go into the first rather than the cache; the
    caller writes it with `cache.put_buffer` later, in bulk (one segment for many calls)."""
    items = list(items)
    dim = embedder.dim
    digests = content_digests(embedder.name, items, embedder.modality)
    prefix = prefixes(digests)
    hit, found = cached_rows(cache, digests, dim, unwritten, prefix)
    miss = np.delete(np.arange(len(items)), hit) if len(hit) else np.arange(len(items))
    first, copy_of = _first_of_each(digests[miss], prefix[miss])
    new = _embed_new(embedder, items, miss[first], digests, cache, chunk_size, unwritten)
    if len(first) == len(items):  # every item new and distinct: the embedder's rows in order
        return new, 0
    out = np.empty((len(items), dim), dtype=np.float32)
    out[hit] = found
    out[miss] = new if copy_of is None else new[copy_of]
    return out, len(hit)


def _first_of_each(digests: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(where each distinct digest first appears, in order; for each digest, which of those
    it is), the second None where the digests are distinct. `prefix`: their `prefixes`,
    sorted first: distinct prefixes, the common case, need no sort of the digests."""
    order = np.argsort(prefix)
    if np.all(prefix[order[1:]] != prefix[order[:-1]]):
        return np.arange(len(digests)), None
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _embed_new(
    embedder: Embedder,
    items: list[Any],
    todo: np.ndarray,
    digests: np.ndarray,
    cache: EmbeddingCache,
    chunk_size: int,
    unwritten: Unwritten | None,
) -> np.ndarray:
    """Vectors of `items[todo]`, embedded in chunks, each put in `cache` (or the first
    `unwritten` buffer) as it is done."""
    dim = embedder.dim
    embedded = [np.empty((0, dim), dtype=np.float32)]
    in_order = len(todo) == len(items)  # then todo is every position, in order
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        try:
            part = (
                items[start : start + chunk_size]
                if in_order
                else [items[i] for i in chunk.tolist()]
            )
            vectors = embedder.embed(part)
        except InputError as exc:
            raise InputError(int(chunk[exc.index]), exc.reason) from None
        if vectors.shape != (len(chunk), dim):
            raise ValueError(
                f"embedder {embedder.name} returned shape {vectors.shape} for "
                f"{len(chunk)} items of dim {dim}"
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        if unwritten is None:
            cache.put(digests[chunk], vectors)
        else:
            unwritten[0].add(digests[chunk], vectors)
        embedded.append(vectors)
    return np.concatenate(embedded)


def cached_rows(
    cache: EmbeddingCache,
    digests: np.ndarray,
    dim: int,
    unwritten: Unwritten | None = None,
    prefix: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in `digests` computed before, their `dim`-d vectors): from `unwritten`
    (its buffers in order), else the cache. `prefix`: `prefixes(digests)` if known."""
    finders = [partial(source.find, dim=dim) for source in (*(unwritten or ()), cache)]
    prefix = prefixes(digests) if prefix is None else prefix
    return first_found(finders, digests, prefix, dim)


def cached_vectors(
    cache: EmbeddingCache, keys: list[str], dim: int, unwritten: Unwritten
) -> dict[str, np.ndarray]:
    """`cached_rows` by hex key."""
    at, rows = cached_rows(cache, digests_of(keys), dim, unwritten)
    return {keys[i]: row for i, row in zip(at.tolist(), rows, strict=True)}
