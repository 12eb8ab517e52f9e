"""Qdrant's own engine in process, through qdrant-edge-py: `qdrant+edge:PATH`.

One shard in a folder (WAL, segments), no server. Writes land in an appendable segment that
is searched by full scan (exact, correct at once); `flush()` (and `close()`) runs the
optimizer, which builds the HNSW index over segments past Qdrant's indexing threshold
(about 10 MB of vectors), then makes everything durable.

Options: `m`, `ef_construct` (HNSW), `indexing_threshold` (KB of vectors in a segment
before it gets a graph) and `full_scan_threshold` (KB of filtered vectors below which a
filtered search scores them exactly), all fixed at creation; `ef` (default search ef),
`indexes=genre,year` (payload indexes; see store.py). Search params: `ef`, `exact`. The
folder is held by one opener at a time. `embedrec.json` in the folder records the
dimension, the metric and the HNSW parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from embedrec.stores.errors import (
    ConfigError,
    CorruptStore,
    DimensionError,
    MetadataError,
    StoreError,
    StoreLocked,
    StoreNotFound,
)
from embedrec.stores.qdrant.dialect import ID_KEY, Dialect, indexed_keys, json_path
from embedrec.stores.qdrant.edge_floats import kept, storable
from embedrec.stores.qdrant.store import QdrantStore
from embedrec.stores.uri import StoreURI

MANIFEST = "embedrec.json"
DISTANCES = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "l2": qe.Distance.Euclid}
SCHEMAS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
DIALECT = Dialect(
    Filter=qe.Filter,
    FieldCondition=qe.FieldCondition,
    MatchValue=qe.MatchValue,
    MatchAny=qe.MatchAny,
    Range=qe.RangeFloat,
    is_empty=qe.IsEmptyCondition,
    has_id=qe.HasIdCondition,
    matches_bools=False,
)
HNSW_DEFAULTS = {"m": 16, "ef_construct": 100}
THRESHOLD_DEFAULTS = {"full_scan_threshold": 10_000, "indexing_threshold": None}
"""Qdrant's defaults (KB); None leaves the indexing threshold to the engine (10 MB)."""
GATHER_PAGE = 8192
"""Points per scroll when gathering a filter's vectors."""


def _refusal(payload: dict, exc: Exception) -> str:
    """Why the engine refused a point, in words: its conversion errors name only the Rust
    enum it failed to extract."""
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError as bad:
        return f"it holds a string that is not valid UTF-8: {bad.reason}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class EdgeEngine:
    """One qdrant-edge shard in a folder."""

    dialect = DIALECT
    ann = True
    persistent = True
    remote = False
    upsert_chunk = 1024

    def __init__(self, path: Path, options: dict[str, int | None]) -> None:
        self.path = path
        self.options = options
        self.shard: Any = None
        self.dim, self.metric = 0, "cosine"
        self.hnsw_m, self.default_ef = HNSW_DEFAULTS["m"], HNSW_DEFAULTS["ef_construct"]
        self.dirty = False
        self.stale_graph = False
        self.info: dict[str, Any] | None = None
        self.uri = f"qdrant+edge:{path}"

    @classmethod
    def connect(cls, uri: StoreURI) -> EdgeEngine:
        if not uri.location:
            raise ConfigError(f"{uri.raw}: expected qdrant+edge:PATH")
        names = (*HNSW_DEFAULTS, *THRESHOLD_DEFAULTS)
        return cls(Path(uri.location), {k: uri.pop_int(k) for k in names})

    def attach(self, uri: str, dim: int | None, metric: str | None) -> None:
        self.uri = uri
        if (self.path / MANIFEST).exists():
            self._load(dim, metric)
        else:
            self._create(dim, metric)

    def _load(self, dim: int | None, metric: str | None) -> None:
        try:
            saved = json.loads((self.path / MANIFEST).read_text())
            self.dim, self.metric = int(saved["dim"]), str(saved["metric"])
            hnsw = {**HNSW_DEFAULTS, **saved.get("hnsw", {})}
            self.hnsw_m, self.default_ef = int(hnsw["m"]), int(hnsw["ef_construct"])
            self.stale_graph = saved.get("stale_graph") is True
            self.info = saved.get("info")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStore(f"{self.uri}: unreadable {self.path / MANIFEST}: {exc}") from None
        if dim is not None and dim != self.dim:
            raise DimensionError(f"{self.uri}: the store has dimension {self.dim}, asked for {dim}")
        if metric is not None and metric != self.metric:
            raise ConfigError(
                f"{self.uri}: the store uses metric {self.metric}, asked for {metric}"
            )
        try:
            self.shard = qe.EdgeShard.load(str(self.path))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(
                    f"{self.uri}: {self.path} is already open in another store or process "
                    "(a Qdrant Edge shard has one opener at a time); close that one first"
                ) from None
            raise CorruptStore(
                f"{self.uri}: cannot load the Qdrant Edge shard in {self.path}: {exc}"
            ) from exc

    def _config(self) -> Any:
        given = {k: v for k, v in self.options.items() if v is not None}
        thresholds = {**THRESHOLD_DEFAULTS, **given}
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=DISTANCES[self.metric]),
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m,
                ef_construct=self.default_ef,
                full_scan_threshold=thresholds["full_scan_threshold"],
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=thresholds["indexing_threshold"]),
        )

    def _create(self, dim: int | None, metric: str | None) -> None:
        if dim is None:
            raise StoreNotFound(f"{self.uri}: no store at {self.path}; pass dim to create one")
        if (self.path / "edge_config.json").exists():
            raise StoreError(
                f"{self.uri}: {self.path} holds a Qdrant Edge shard that embedrec did not "
                f"create (no {MANIFEST}); open it with qdrant_edge directly or pick another path"
            )
        self.dim, self.metric = dim, metric or "cosine"
        self.hnsw_m = self.options["m"] or HNSW_DEFAULTS["m"]
        self.default_ef = self.options["ef_construct"] or HNSW_DEFAULTS["ef_construct"]
        try:
            self.shard = qe.EdgeShard.create(str(self.path), self._config())
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(
                    f"{self.uri}: {self.path} is being created by another opener"
                ) from None
            raise StoreError(
                f"{self.uri}: cannot create a Qdrant Edge shard in {self.path}: {exc}"
            ) from exc
        self._save_manifest()

    def _save_manifest(self) -> None:
        manifest = {
            "dim": self.dim,
            "metric": self.metric,
            "hnsw": {"m": self.hnsw_m, "ef_construct": self.default_ef},
            "stale_graph": self.stale_graph,
        }
        if self.info is not None:
            manifest["info"] = self.info
        tmp = self.path / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.path / MANIFEST)

    def read_info(self) -> dict[str, Any] | None:
        return self.info

    def write_info(self, raw: dict[str, Any]) -> None:
        """Kept in `embedrec.json` beside the shard, written atomically (a rename)."""
        self.info = raw
        self._save_manifest()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Engine errors (plain Exceptions) become StoreErrors naming the store."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.uri}: Qdrant Edge failed: {exc}") from exc

    # -- points ----------------------------------------------------------------------------

    def upsert(self, ids: list[str], rows: list[list[float]], payloads: list[dict]) -> None:
        """Every point is built (the engine converts and checks its payload then) before the
        first chunk is written, so a batch the engine refuses writes nothing."""
        points = []
        for pid, row, payload in zip(ids, rows, payloads, strict=True):
            self._exact_floats(payload)
            try:
                points.append(qe.Point(pid, row, payload))
            except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
                cause = _refusal(payload, exc)
                raise MetadataError(
                    f"{self.uri}: record {payload[ID_KEY]!r}: Qdrant Edge cannot store it "
                    f"({cause}); nothing of this batch was written"
                ) from exc
        n = self.upsert_chunk
        for start in range(0, len(points), n):
            self.shard.update(qe.UpdateOperation.upsert_points(points[start : start + n]))
        self.dirty = True

    def _exact_floats(self, payload: dict) -> None:
        """Swap each float for one the engine keeps exactly (see edge_floats), or refuse it."""
        for key, value in payload.items():
            if type(value) is float:
                exact = storable(value)
                if exact is None:
                    raise MetadataError(
                        f"{self.uri}: record {payload[ID_KEY]!r}, key {key!r}: Qdrant Edge "
                        f"cannot store {value!r} exactly (it would keep {kept(value)!r}); "
                        "round it to 15 significant digits or store it as a string; nothing "
                        "of this batch was written"
                    )
                payload[key] = exact

    def retrieve(self, ids: list[str], with_data: bool) -> list[Any]:
        return self.shard.retrieve(ids, with_data, with_data)

    def scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        request = qe.ScrollRequest(offset=offset, limit=limit, with_payload=True)
        return self.shard.scroll(request)

    def delete(self, ids: list[Any]) -> None:
        self.shard.update(qe.UpdateOperation.delete_points(ids))
        self.dirty = True

    def delete_filter(self, qfilter: Any) -> None:
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(qfilter))
        self.dirty = True

    def count(self, qfilter: Any) -> int:
        return self.shard.count(qe.CountRequest(exact=True, filter=qfilter))

    def matching_vectors(self, qfilter: Any) -> tuple[list[Any], np.ndarray]:
        ids: list[Any] = []
        rows: list[list[float]] = []
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=GATHER_PAGE,
                filter=qfilter,
                with_payload=False,
                with_vector=True,
            )
            records, offset = self.shard.scroll(request)
            for r in records:
                ids.append(r.id)
                rows.append(r.vector)
            if offset is None:
                break
        return ids, np.array(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def payloads(self, ids: list[Any]) -> dict[Any, dict]:
        return {r.id: r.payload for r in self.shard.retrieve(ids, True, False)}

    def query(
        self,
        vectors: list[list[float]],
        filters: Sequence[Any],
        k: int,
        ef: int | None,
        exact: bool,
    ) -> list[list[Any]]:
        search = qe.SearchParams(hnsw_ef=ef, exact=exact)
        requests = [
            qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(v), filter=f, params=search, with_payload=True
            )
            for v, f in zip(vectors, filters, strict=True)
        ]
        return self.shard.query_batch(qe.QueryBatchRequest(requests))

    # -- payload indexes and the graph -----------------------------------------------------

    def indexed(self) -> set[str]:
        return indexed_keys(self.shard.info().payload_schema)

    def create_index(self, key: str, schema: str) -> None:
        self.shard.update(qe.UpdateOperation.create_field_index(json_path(key), SCHEMAS[schema]))
        if not self.stale_graph and self.shard.info().indexed_vectors_count > 0:
            self.stale_graph = True
            self._save_manifest()

    def rebuild(self) -> None:
        """The optimizer leaves a built segment alone when an index is added (it has nothing
        to merge or vacuum), so every point is written again: the old segments empty out and
        are vacuumed, and the new one is indexed with every payload index's links."""
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=self.upsert_chunk, with_payload=True, with_vector=True
            )
            records, offset = self.shard.scroll(request)
            if records:
                points = [qe.Point(r.id, r.vector, r.payload) for r in records]
                self.shard.update(qe.UpdateOperation.upsert_points(points))
            if offset is None:
                break
        self.optimize()
        self.stale_graph = False
        self._save_manifest()

    def optimize(self) -> bool:
        changed = self.shard.optimize()
        self.dirty = False
        return changed

    def flush(self) -> None:
        if self.dirty:
            self.optimize()
        self.shard.flush()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None


class QdrantEdgeStore(QdrantStore):
    """`qdrant+edge:PATH` stores."""

    engine_type = EdgeEngine

    def optimize(self) -> bool:
        """Build the HNSW index (and merge/vacuum segments); True when anything changed."""
        with self.guard():
            return self.engine.optimize()  # type: ignore[attr-defined]

    @property
    def shard(self) -> Any:
        """The open qdrant-edge shard (None once closed), for benchmarks and tests."""
        return self.engine.shard  # type: ignore[attr-defined]
