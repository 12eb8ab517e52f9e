"""Pinecone serverless through the `pinecone` SDK 10 (REST over httpx).

URI: `pinecone://INDEX?namespace=NS`, options:

- `create=1&cloud=aws&region=us-east-1`: create a missing index through the control plane
  (serverless; dimension and metric from `open_store`); without it a missing index is a
  `StoreNotFound`;
- `retries=5&backoff=0.5`: how often and how patiently a request that met 429, 5xx, a
  dropped connection or a timeout is tried again (exponential backoff from `backoff`
  seconds, capped at 8 s, or longer when Pinecone's Retry-After asks) before
  `StoreUnavailable`. The SDK's own data-plane retries are switched off so that this one
  schedule is the only one;
- `flush_timeout=60`: seconds `flush()` waits for the index to show every write;
- `timeout=30`: seconds for one HTTP request.

`PINECONE_API_KEY` comes from the environment only. `PINECONE_HOST` sends the data plane to
that host instead of the one the control plane reports (then dimension and metric come from
`describe_index_stats`); `PINECONE_CONTROLLER_HOST` points the control plane elsewhere.

Pinecone's limits are honoured on the client: upserts are cut by their serialized size
(<= 2,000,000 bytes, <= 1,000 vectors), fetches and deletes go in chunks of <= 1,000 ids,
metadata is <= 40 KB a record, top_k <= 10,000 (values and metadata are asked for only up
to 1,000 and fetched by id beyond). Vector values travel in float32's shortest decimal form,
exact and about half the size of the float64 form the SDK would write.

Ids are sent as they are when Pinecone takes them (1-512 ASCII characters, no NUL); any
other id is sent percent-encoded behind `~u:`, and mapped back on the way out.

Scores: cosine and dot are Pinecone's own (the inner product; cosine vectors are normalised
before they are sent). For l2 the score is computed here from the returned values, as the
negated squared distance, so that it does not depend on how Pinecone scales "euclidean".

Consistency: Pinecone is eventually consistent. The store counts what the namespace should
hold after its own writes (it checks which ids already exist before writing), and `flush()`
waits until `describe_index_stats` reports that count. `search`, `fetch` and `count` flush
first when there are writes not yet seen, so "ingest, then search" is complete. This assumes
one writer per namespace; another writer makes `flush()` time out with `StoreUnavailable`.

Filtered counts and deletes page through `fetch_by_metadata` (exact, but it transfers the
matching records), because serverless indexes count only whole namespaces.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import numpy as np
import orjson
from pinecone import Pinecone, RetryConfig
from pinecone.errors.exceptions import (
    ApiError,
    ForbiddenError,
    NotFoundError,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)

from embedrec.stores.base import Capabilities, Hit, Hits, Record, VectorStore
from embedrec.stores.errors import (
    AuthError,
    ConfigError,
    DimensionError,
    IdError,
    MetadataError,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
)
from embedrec.stores.filters import And, Cond, Node
from embedrec.stores.uri import StoreURI

MAX_UPSERT_BYTES = 2_000_000
MAX_UPSERT_VECTORS = 1_000
MAX_IDS = 1_000
MAX_ID_QUERY_CHARS = 30_000
"""Fetch ids travel in the URL: keep one request's query string well under server limits."""
MAX_METADATA_BYTES = 40 * 1024
MAX_TOP_K = 10_000
MAX_TOP_K_WITH_DATA = 1_000
MAX_ID_CHARS = 512
PAGE = 1_000
ENCODED_ID_PREFIX = "~u:"
DEFAULT_NAMESPACE_KEYS = ("__default__", "")
METRIC_TO_PINECONE = {"cosine": "cosine", "dot": "dotproduct", "l2": "euclidean"}
METRIC_FROM_PINECONE = {v: k for k, v in METRIC_TO_PINECONE.items()}
INDEX_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?$")
MAX_BACKOFF = 8.0
RETRYABLE = (RateLimitError, ServiceError, PineconeConnectionError, PineconeTimeoutError)

T = TypeVar("T")


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


# -- options -------------------------------------------------------------------------------


def _pop_float(uri: StoreURI, name: str, default: float) -> float:
    value = uri.pop(name)
    if value is None:
        return default
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{uri.raw}: option {name}={value!r} is not a number") from None
    if not out >= 0:
        raise ConfigError(f"{uri.raw}: option {name}={value!r} must be >= 0")
    return out


@dataclass(frozen=True)
class Retry:
    retries: int = 5
    backoff: float = 0.5

    def delays(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield min(self.backoff * 2**attempt, MAX_BACKOFF)


@dataclass
class _Pending:
    """What this store has written since the namespace last showed all its writes."""

    base: int
    touched: dict[str, tuple[bool, bool]]
    """wire id -> (existed when the epoch began, exists now)."""
    dirty: bool = False

    def expected(self) -> int:
        now = sum(1 for _, after in self.touched.values() if after)
        before = sum(1 for was, _ in self.touched.values() if was)
        return self.base + now - before


class PineconeStore(VectorStore):
    def __init__(
        self,
        *,
        uri: str,
        client: Pinecone,
        index: Any,
        name: str,
        host: str,
        namespace: str,
        dim: int,
        metric: str,
        retry: Retry,
        flush_timeout: float,
    ) -> None:
        self.uri = uri
        self.dim = dim
        self.metric = metric  # type: ignore[assignment]
        self.capabilities = Capabilities(
            exact=False,
            max_batch=MAX_UPSERT_VECTORS,
            persistent=True,
            exact_vectors=True,
            max_k=MAX_TOP_K,
            remote=True,
        )
        self.name = name
        self.host = host
        self.namespace = namespace
        self._client = client
        self._index = index
        self._retry = retry
        self._flush_timeout = flush_timeout
        self._pending = _Pending(self._namespace_count(), {})

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> PineconeStore:
        name = uri.location.strip("/")
        if not INDEX_NAME.match(name):
            raise ConfigError(
                f"{uri.raw}: {name!r} is not a Pinecone index name "
                "(1-45 lowercase letters, digits and hyphens, not starting or ending with '-')"
            )
        namespace = uri.pop("namespace", "") or ""
        if len(namespace) > 512 or not namespace.isascii() or "\x00" in namespace:
            raise ConfigError(f"{uri.raw}: namespace must be 1-512 ASCII characters")
        create = uri.pop_bool("create")
        cloud = uri.pop("cloud", "aws") or "aws"
        region = uri.pop("region", "us-east-1") or "us-east-1"
        retries = uri.pop_int("retries", 5)
        if retries is None or retries < 0:
            raise ConfigError(f"{uri.raw}: retries must be >= 0")
        retry = Retry(retries, _pop_float(uri, "backoff", 0.5))
        flush_timeout = _pop_float(uri, "flush_timeout", 60.0)
        timeout = _pop_float(uri, "timeout", 30.0)
        uri.done()

        api_key = os.environ.get("PINECONE_API_KEY")
        if not api_key:
            raise ConfigError(f"{uri.raw}: set PINECONE_API_KEY in the environment")
        client = Pinecone(
            api_key=api_key, timeout=timeout or 30.0, retry_config=RetryConfig(max_retries=0)
        )
        host = os.environ.get("PINECONE_HOST", "")
        where = f"Pinecone index {name!r}"
        described = None
        if not host:
            described = _describe_or_create(
                client, name, where, create, dim, metric, cloud, region, retry
            )
            host = described.host or ""
            if not host:
                raise StoreUnavailable(f"{where} has no host yet (still initialising)")
        index = client.index(host=host)
        _own_retries(index)
        stats = _with_retries(
            retry, f"{where} at {host}", "describe_index_stats", index.describe_index_stats
        )
        have_dim, have_metric = stats.dimension, stats.metric
        if described is not None:
            have_dim, have_metric = described.dimension, described.metric
        ours = METRIC_FROM_PINECONE.get(str(have_metric))
        if have_dim is None or ours is None:
            raise ConfigError(f"{where} is not a dense index with a known metric ({have_metric})")
        if dim is not None and dim != have_dim:
            raise DimensionError(f"{where} has dimension {have_dim}, not {dim}")
        if metric is not None and metric != ours:
            raise ConfigError(f"{where} uses metric {ours} ({have_metric}), not {metric}")
        return cls(
            uri=uri.raw,
            client=client,
            index=index,
            name=name,
            host=host,
            namespace=namespace,
            dim=int(have_dim),
            metric=ours,
            retry=retry,
            flush_timeout=flush_timeout,
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        where = f"Pinecone index {self.name!r} at {self.host}"
        return _with_retries(self._retry, where, what, fn, **kwargs)

    def _namespace_count(self) -> int:
        stats = self._call("describe_index_stats", self._index.describe_index_stats)
        for key in (self.namespace,) if self.namespace else DEFAULT_NAMESPACE_KEYS:
            if key in stats.namespaces:
                return int(stats.namespaces[key].vector_count)
        return 0

    def _fetch_wire(self, wire_ids: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        usable = [w for w in wire_ids if len(w) <= MAX_ID_CHARS]  # longer ones cannot exist
        for chunk in id_chunks(usable):
            resp = self._call("fetch", self._index.fetch, ids=chunk, namespace=self.namespace)
            out.update(resp.vectors)
        return out

    def _existing(self, wire_ids: list[str]) -> set[str]:
        unknown = [w for w in wire_ids if w not in self._pending.touched]
        return set(self._fetch_wire(unknown)) if unknown else set()

    def _mark(self, wire_ids: Iterable[str], exists: bool, existing: set[str]) -> int:
        """Record writes; returns how many of the ids existed before them."""
        had = 0
        for w in wire_ids:
            was, now = self._pending.touched.get(w, (w in existing, w in existing))
            had += now
            self._pending.touched[w] = (was, exists)
        self._pending.dirty = True
        return had

    def _settle(self) -> None:
        if self._pending.dirty:
            self.flush()

    # -- hooks -------------------------------------------------------------------------------

    def _upsert(self, ids: list[str], vectors: np.ndarray, metadata: list[dict]) -> int:
        items: list[dict[str, Any]] = []
        for rid, values, meta in zip(ids, short_floats(vectors), metadata, strict=True):
            w = wire_id(rid)
            if len(w) > MAX_ID_CHARS:
                raise IdError(
                    f"id {rid!r} is {len(w)} characters as sent to Pinecone "
                    f"(non-ASCII ids are percent-encoded); Pinecone takes at most {MAX_ID_CHARS}"
                )
            item: dict[str, Any] = {"id": w, "values": values}
            if meta:
                check_metadata_size(rid, meta)
                item["metadata"] = meta
            items.append(item)
        written = 0
        for batch in list(upsert_batches(items, self.namespace)):  # all sized before any is sent
            wire_ids = [item["id"] for item in batch]
            existing = self._existing(wire_ids)
            try:
                self._call("upsert", self._index.upsert, vectors=batch, namespace=self.namespace)
            except StoreUnavailable as exc:
                raise StoreUnavailable(
                    f"{exc} ({written} of {len(items)} records were written before this; "
                    "upserts are idempotent, so upserting the same records again resumes)"
                ) from exc
            self._mark(wire_ids, True, existing)
            written += len(batch)
        return written

    def _delete_ids(self, ids: list[str]) -> int:
        wire_ids = [w for w in map(wire_id, ids) if len(w) <= MAX_ID_CHARS]
        existing = self._existing(wire_ids)
        had = 0
        for chunk in id_chunks(wire_ids):
            self._call("delete", self._index.delete, ids=chunk, namespace=self.namespace)
            had += self._mark(chunk, False, existing)
        return had

    def _delete_filter(self, node: Node) -> int:
        self._settle()
        flt = translate_filter(node)
        if flt is None:
            count = self._pending.base
            self._call("delete", self._index.delete, delete_all=True, namespace=self.namespace)
            self._pending = _Pending(0, {}, dirty=True)
            self.flush()
            return count
        return self._delete_ids_wire(self._matching_ids(flt))

    def _delete_ids_wire(self, wire_ids: list[str]) -> int:
        for chunk in id_chunks(wire_ids):
            self._call("delete", self._index.delete, ids=chunk, namespace=self.namespace)
            self._mark(chunk, False, set(chunk))
        return len(wire_ids)

    def _matching_ids(self, flt: dict[str, Any]) -> list[str]:
        ids: list[str] = []
        token: str | None = None
        while True:
            page = self._call(
                "fetch_by_metadata",
                self._index.fetch_by_metadata,
                filter=flt,
                namespace=self.namespace,
                limit=PAGE,
                pagination_token=token,
            )
            ids.extend(page.vectors)
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                return ids

    def _fetch(self, ids: list[str]) -> list[Record]:
        self._settle()
        got = self._fetch_wire([wire_id(i) for i in ids])
        out = []
        for rid in ids:
            vec = got.get(wire_id(rid))
            if vec is not None:
                values = np.asarray(vec.values, dtype=np.float32)
                out.append(Record(rid, values, dict(vec.metadata or {})))
        return out

    def _search(
        self, queries: np.ndarray, k: int, node: Node | None, params: dict[str, Any]
    ) -> list[Hits]:
        self._settle()
        flt = translate_filter(node) if node is not None else None
        rows = short_floats(queries)
        if len(rows) == 1:
            return [self._query_one(queries[0], rows[0], k, flt)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(
                pool.map(lambda i: self._query_one(queries[i], rows[i], k, flt), range(len(rows)))
            )

    def _query_one(
        self, query: np.ndarray, row: list[float], k: int, flt: dict[str, Any] | None
    ) -> Hits:
        inline = k <= MAX_TOP_K_WITH_DATA
        resp = self._call(
            "query",
            self._index.query,
            top_k=k,
            vector=row,
            namespace=self.namespace,
            filter=flt,
            include_metadata=inline,
            include_values=inline and self.metric == "l2",
        )
        matches = resp.matches
        if inline:
            metas = [m.metadata for m in matches]
            values = [m.values for m in matches]
        else:
            got = self._fetch_wire([m.id for m in matches])
            metas = [got[m.id].metadata if m.id in got else None for m in matches]
            values = [got[m.id].values if m.id in got else [] for m in matches]
        hits = []
        for m, meta, vals in zip(matches, metas, values, strict=True):
            score = float(m.score)
            if self.metric == "l2":
                diff = np.asarray(vals, dtype=np.float64) - query.astype(np.float64)
                score = -float(diff @ diff)
            hits.append(Hit(user_id(m.id), score, dict(meta or {})))
        if self.metric == "l2":
            hits.sort(key=lambda h: -h.score)
        return Hits.of(hits)

    def _count(self, node: Node | None) -> int:
        self._settle()
        flt = translate_filter(node) if node is not None else None
        if flt is None:
            return self._pending.base
        return len(self._matching_ids(flt))

    # -- consistency and lifetime --------------------------------------------------------------

    def flush(self) -> None:
        """Wait until `describe_index_stats` shows every write this store made."""
        if not self._pending.dirty:
            return
        expected = self._pending.expected()
        deadline = time.monotonic() + self._flush_timeout
        pause = 0.02
        while True:
            seen = self._namespace_count()
            if seen == expected:
                self._pending = _Pending(expected, {})
                return
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"Pinecone index {self.name!r} namespace {self.namespace!r}: after "
                    f"{self._flush_timeout:g} s it reports {seen} vectors, {expected} expected "
                    "(another writer, or the index is slow to catch up)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._index.close()
            self._client.close()


# -- module helpers ------------------------------------------------------------------------


def _own_retries(index: Any) -> None:
    """Switch off the data-plane client's own retries: `Index()` takes no retry config, and
    the SDK's schedule (4 attempts) would multiply with the store's. The retry transport is
    SDK-internal; tests/stores/test_pinecone_faults.py checks that one 503 is one request."""
    from pinecone._internal.http_client import _RetryTransport

    transport = getattr(getattr(index._http, "_client", None), "_transport", None)
    if isinstance(transport, _RetryTransport):
        transport._config = replace(transport._config, max_retries=0)


def _with_retries(retry: Retry, where: str, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    delays = retry.delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn(**kwargs)
        except (UnauthorizedError, ForbiddenError) as exc:
            raise AuthError(
                f"{where}: Pinecone refused the API key for {what} ({exc.status_code}); "
                "check PINECONE_API_KEY"
            ) from None
        except NotFoundError:
            raise StoreNotFound(f"{where}: not found ({what})") from None
        except RETRYABLE as exc:
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailable(
                    f"{where}: {what} failed {attempts} times; last error: {exc}"
                ) from exc
            after = getattr(exc, "retry_after", None)
            time.sleep(min(max(delay, after or 0.0), MAX_BACKOFF))
        except ApiError as exc:
            raise StoreError(f"{where}: Pinecone refused {what}: {exc}") from None
        except PineconeError as exc:
            raise StoreError(f"{where}: {what} failed: {exc}") from None


def _describe_or_create(
    client: Pinecone,
    name: str,
    where: str,
    create: bool,
    dim: int | None,
    metric: str | None,
    cloud: str,
    region: str,
    retry: Retry,
) -> Any:
    try:
        return _with_retries(retry, where, "describe", client.indexes.describe, name=name)
    except StoreNotFound:
        if not create:
            raise StoreNotFound(
                f"{where} does not exist; create it, or open with ?create=1"
                "&cloud=aws&region=us-east-1 and a dim"
            ) from None
    if dim is None:
        raise StoreNotFound(f"{where} does not exist and creating it needs a dim")
    schema = {
        "fields": {
            "_values": {
                "type": "dense_vector",
                "dimension": dim,
                "metric": METRIC_TO_PINECONE[metric or "cosine"],
            }
        }
    }
    deployment = {"deployment_type": "managed", "cloud": cloud, "region": region}
    return _with_retries(
        retry,
        where,
        "create",
        client.indexes.create,
        name=name,
        schema=schema,
        deployment=deployment,
        timeout=300,
    )
