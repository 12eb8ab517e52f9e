"""`PineconeStore`: the store interface over one Pinecone index namespace (see the
package doc for options, limits, scores and consistency)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
from pinecone import Pinecone, RetryConfig

from embedrec.stores.base import Capabilities, CheckedBatch, Hit, Hits, Record, VectorStore
from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    IdError,
    StoreNotFound,
    StoreUnavailable,
)
from embedrec.stores.filters import Node
from embedrec.stores.pinecone.alias_record import (
    INFO_NAMESPACE,  # holds each namespace's store info; no store opens it for data
    generation_namespace,
    read_alias,
)
from embedrec.stores.pinecone.retry import Retry, own_retries, pop_float, with_retries
from embedrec.stores.pinecone.wire import (
    MAX_UPSERT_VECTORS,
    check_metadata_size,
    id_chunks,
    short_floats,
    translate_filter,
    upsert_batches,
    user_id,
    wire_id,
)
from embedrec.stores.uri import StoreURI

MAX_TOP_K = 10_000
MAX_TOP_K_WITH_DATA = 1_000
MAX_ID_CHARS = 512
PAGE = 1_000
DEFAULT_NAMESPACE_KEYS = ("__default__", "")
METRIC_TO_PINECONE = {"cosine": "cosine", "dot": "dotproduct", "l2": "euclidean"}
METRIC_FROM_PINECONE = {v: k for k, v in METRIC_TO_PINECONE.items()}
INDEX_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?$")

T = TypeVar("T")


def _options(uri: StoreURI) -> tuple[str, str, bool, str, str, Retry, float, float]:
    """The URI's index name and options (see the package doc), checked."""
    name = uri.location.strip("/")
    if not INDEX_NAME.match(name):
        raise ConfigError(
            f"{uri.raw}: {name!r} is not a Pinecone index name "
            "(1-45 lowercase letters, digits and hyphens, not starting or ending with '-')"
        )
    namespace = uri.pop("namespace", "") or ""
    if len(namespace) > 512 or not namespace.isascii() or "\x00" in namespace:
        raise ConfigError(f"{uri.raw}: namespace must be 1-512 ASCII characters")
    if namespace == INFO_NAMESPACE:
        raise ConfigError(f"{uri.raw}: namespace {INFO_NAMESPACE!r} is reserved for embedrec")
    create = uri.pop_bool("create")
    cloud = uri.pop("cloud", "aws") or "aws"
    region = uri.pop("region", "us-east-1") or "us-east-1"
    retries = uri.pop_int("retries", 5)
    if retries is None or retries < 0:
        raise ConfigError(f"{uri.raw}: retries must be >= 0")
    retry = Retry(retries, pop_float(uri, "backoff", 0.5))
    flush_timeout = pop_float(uri, "flush_timeout", 60.0)
    timeout = pop_float(uri, "timeout", 30.0)
    uri.done()
    return name, namespace, bool(create), cloud, region, retry, flush_timeout, timeout


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
        self._info: dict[str, Any] | None = None

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls, uri: StoreURI, *, dim: int | None, metric: str | None, follow_alias: bool = True
    ) -> PineconeStore:
        """An alias namespace (aliases.py) opens its live generation's namespace, unless
        `follow_alias` is False (the alias book's own handle)."""
        name, namespace, create, cloud, region, retry, flush_timeout, timeout = _options(uri)
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
        own_retries(index)
        stats = with_retries(
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
        pointer = None
        if follow_alias and namespace:
            pointer = read_alias(partial(with_retries, retry, where), index, namespace, uri.raw)
        if pointer is not None:
            namespace = generation_namespace(namespace, pointer["live"])
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
        return with_retries(self._retry, where, what, fn, **kwargs)

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

    def _upsert(self, batch: CheckedBatch) -> int:
        ids, vectors, metadata = batch.ids, batch.vectors, batch.metadata
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
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]] | None,
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

    # -- the store info, in the reserved namespace -----------------------------------------

    def _info_id(self) -> str:
        return "info-" + hashlib.sha256(self.namespace.encode()).hexdigest()[:32]

    def _fetch_info(self) -> dict[str, Any] | None:
        resp = self._call(
            "fetch", self._index.fetch, ids=[self._info_id()], namespace=INFO_NAMESPACE
        )
        record = resp.vectors.get(self._info_id())
        if record is None:
            return None
        try:
            raw = json.loads((record.metadata or {})["info"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStore(f"{self.uri}: unreadable store info record: {exc}") from None
        if not isinstance(raw, dict):
            raise CorruptStore(f"{self.uri}: the store info record holds {type(raw).__name__}")
        return raw

    def _read_info(self) -> dict[str, Any] | None:
        if self._info is None:
            self._info = self._fetch_info()
        return self._info

    def _write_info(self, raw: dict[str, Any]) -> None:
        """Upsert the namespace's info record, then wait (up to flush_timeout) until a fetch
        shows it, so that a store opened next reads what was written."""
        values = [1.0] + [0.0] * (self.dim - 1)  # any non-zero vector: it is never searched
        meta = {"info": json.dumps(raw, sort_keys=True), "namespace": self.namespace}
        item = {"id": self._info_id(), "values": values, "metadata": meta}
        self._call("upsert", self._index.upsert, vectors=[item], namespace=INFO_NAMESPACE)
        deadline = time.monotonic() + self._flush_timeout
        while self._fetch_info() != raw:
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"Pinecone index {self.name!r}: the store info written is not visible "
                    f"after {self._flush_timeout:g} s"
                )
            time.sleep(0.05)
        self._info = raw

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
        return with_retries(retry, where, "describe", client.indexes.describe, name=name)
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
    return with_retries(
        retry,
        where,
        "create",
        client.indexes.create,
        name=name,
        schema=schema,
        deployment=deployment,
        timeout=300,
    )
