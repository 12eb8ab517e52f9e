"""What travels to Pinecone: ids in the form it takes, filters in its language, and
requests cut to its limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import orjson

from embedrec.stores.errors import MetadataError, StoreError
from embedrec.stores.filters import And, Cond, Node

MAX_UPSERT_BYTES = 2_000_000
MAX_UPSERT_VECTORS = 1_000
MAX_IDS = 1_000
MAX_ID_QUERY_CHARS = 30_000
"""Fetch ids travel in the URL: keep one request's query string well under server limits."""
MAX_METADATA_BYTES = 40 * 1024
ENCODED_ID_PREFIX = "~u:"


# -- ids -----------------------------------------------------------------------------------


def wire_id(record_id: str) -> str:
    """The id Pinecone sees: unchanged when Pinecone takes it, else percent-encoded."""
    if (
        record_id.isascii()
        and "\x00" not in record_id
        and not record_id.startswith(ENCODED_ID_PREFIX)
    ):
        return record_id
    return ENCODED_ID_PREFIX + quote(record_id, safe="")


def user_id(sent: str) -> str:
    return unquote(sent[len(ENCODED_ID_PREFIX) :]) if sent.startswith(ENCODED_ID_PREFIX) else sent


# -- filters -------------------------------------------------------------------------------


def _absent(field: str) -> dict[str, Any]:
    return {field: {"$exists": False}}


def _any_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {"$or": parts}


def _all_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _cond(c: Cond) -> dict[str, Any]:
    f = c.field
    if c.op == "$ne":
        # ours: true when absent; spelt out so it does not hang on Pinecone's reading of $ne
        return {"$or": [{f: {"$ne": c.value}}, _absent(f)]}
    if c.op in ("$in", "$nin"):
        # Pinecone's $in/$nin take strings and numbers; booleans go through $eq/$ne
        plain = [v for v in c.value if not isinstance(v, bool)]
        flags = [v for v in c.value if isinstance(v, bool)]
        if c.op == "$in":
            parts = ([{f: {"$in": plain}}] if plain else []) + [{f: {"$eq": b}} for b in flags]
            return _any_of(parts)
        parts = ([{f: {"$nin": plain}}] if plain else []) + [{f: {"$ne": b}} for b in flags]
        return {"$or": [_all_of(parts), _absent(f)]}
    return {f: {c.op: c.value}}


def translate_filter(node: Node) -> dict[str, Any] | None:
    """Our filter tree as a Pinecone filter with our semantics; None when it matches all."""
    if isinstance(node, Cond):
        return _cond(node)
    parts = [translate_filter(n) for n in node.items]
    if isinstance(node, And):
        kept = [p for p in parts if p is not None]
        return _all_of(kept) if kept else None
    if not parts or any(p is None for p in parts):  # an Or with a match-all branch
        return None
    return _any_of([p for p in parts if p is not None])


# -- payloads ------------------------------------------------------------------------------


def short_floats(vectors: np.ndarray) -> list[list[float]]:
    """Rows as Python floats whose JSON is float32's shortest round-trip decimal (exact)."""
    return orjson.loads(orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY))


def upsert_batches(
    items: list[dict[str, Any]], namespace: str, max_bytes: int = MAX_UPSERT_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """Cut records into requests of <= MAX_UPSERT_VECTORS whose JSON body (as the SDK
    writes it: `{"vectors":[...],"namespace":NS}`) is <= max_bytes."""
    fixed = len(orjson.dumps({"vectors": [], **({"namespace": namespace} if namespace else {})}))
    batch: list[dict[str, Any]] = []
    size = fixed
    for item in items:
        item_size = len(orjson.dumps(item))
        if fixed + item_size > max_bytes:
            raise StoreError(
                f"record {user_id(item['id'])!r} alone is {item_size} bytes as JSON; "
                f"a Pinecone upsert request takes at most {max_bytes}"
            )
        extra = item_size + (1 if batch else 0)
        if batch and (size + extra > max_bytes or len(batch) >= MAX_UPSERT_VECTORS):
            yield batch
            batch, size, extra = [], fixed, item_size
        batch.append(item)
        size += extra
    if batch:
        yield batch


def id_chunks(ids: list[str]) -> Iterator[list[str]]:
    """<= MAX_IDS ids per request, and a bounded URL for fetch."""
    chunk: list[str] = []
    chars = 0
    for i in ids:
        cost = len(quote(i, safe="")) + len("&ids=")
        if chunk and (len(chunk) >= MAX_IDS or chars + cost > MAX_ID_QUERY_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(i)
        chars += cost
    if chunk:
        yield chunk


def check_metadata_size(record_id: str, metadata: dict[str, Any]) -> None:
    size = len(orjson.dumps(metadata))
    if size > MAX_METADATA_BYTES:
        key = max(metadata, key=lambda k: len(orjson.dumps({k: metadata[k]})))
        raise MetadataError(
            f"record {record_id!r}: metadata is {size} bytes as JSON, Pinecone takes at most "
            f"{MAX_METADATA_BYTES} per record (largest key {key!r})"
        )
