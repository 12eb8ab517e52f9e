"""The Qdrant store, written once over an engine (`engine.Engine`): qdrant-client for a
server and its local mode, qdrant-edge-py for the engine in process.

Payload indexes. Qdrant builds filter-aware graph links only for the payload indexes that
exist when the graph is built, so a store indexes, in order of preference: the fields
declared before the first write (`declare_fields`, from ingestion's metadata spec), the
fields named by `indexes=` (typed by their first upserted value), and any other field a
filter uses, at its first use. An index added once the graph exists marks the graph stale;
`flush()` rebuilds it.

Filtered search is planned by the engine: Qdrant estimates a filter's matches from its
payload indexes, scores them exactly below `full_scan_threshold`, and otherwise walks the
graph keeping only matching points as candidates, so ef need not rise with 1/selectivity
(FAISS's selector search keeps non-matching ones, which is why FAISS raises it). The store
adds what the engine lacks, from a filter's matches counted once and kept until this
store's next write (an exact count collects every matching id: counted per query, it cost
more than the search; another process's writes to a server only reach the plan late, never
the answers): matches up to twice what the graph search scores (ef * m) are
scored exactly, which a graph without the field's links (an index added late) would miss
(raising ef as FAISS does doubled the cost of random filters and did not bring back the
recall of correlated ones); and any query still short of k while more points match is
answered again exactly, with a fresh count. So k hits come back whenever k records match.
On an engine the store alone writes (edge), a filter searched again whose matches are at
most SCAN_GAIN times what the graph search scores is answered exactly by the store itself,
from the matches' vectors gathered once (`gathered.py`), faster than Qdrant's exact path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from embedrec.stores.base import Capabilities, CheckedBatch, Hits, Record, VectorStore
from embedrec.stores.errors import ConfigError, StoreError
from embedrec.stores.filters import Node
from embedrec.stores.qdrant.dialect import (
    field_schema,
    from_payload,
    index_schema,
    leave_out,
    point_id,
    to_payload,
    translate,
    value_kind,
)
from embedrec.stores.qdrant.engine import Engine, SoleWriter
from embedrec.stores.qdrant.gathered import SCAN_GAIN, FilterCache, Gathered
from embedrec.stores.uri import StoreURI

log = logging.getLogger(__name__)

EXACT_WORK = 2
"""Matches up to this many times the vectors a graph search scores are scored exactly."""


def search_options(params: Mapping[str, Any], default_ef: int | None) -> tuple[int | None, bool]:
    """Validated (ef, exact) from per-call search params."""
    ef = params.get("ef", default_ef)
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 1):
        raise ConfigError(f"search param ef must be a positive integer, got {ef!r}")
    exact = params.get("exact", False)
    if not isinstance(exact, bool):
        raise ConfigError(f"search param exact must be true or false, got {exact!r}")
    return ef, exact


def hits_from(points: Iterable[Any], l2: bool) -> Hits:
    """One query's scored points as hits. Qdrant's Euclid score is the distance; ours is
    the negated squared distance."""
    ids, scores, metadata = [], [], []
    for p in points:
        rid, meta = from_payload(p.payload)
        ids.append(rid)
        scores.append(-(float(p.score) ** 2) if l2 else float(p.score))
        metadata.append(meta)
    return Hits(ids, scores, metadata)


class QdrantStore(VectorStore):
    """A Qdrant collection over the engine that `engine_type` names (set by each engine
    module's subclass, which is what the store registry opens)."""

    engine_type: ClassVar[type[Engine]]

    def __init__(self, uri: str, engine: Engine, default_ef: int | None, indexes: list[str]):
        self.uri = uri
        self.engine = engine
        self.dim = engine.dim
        self.metric = engine.metric  # type: ignore[assignment]
        self.default_ef = default_ef
        self.indexed: set[str] = engine.indexed() if engine.ann else set()
        self.pending_indexes = indexes if engine.ann else []
        self._filters = FilterCache()
        self._gathers = isinstance(engine, SoleWriter)
        self._closed = False
        self.capabilities = Capabilities(
            exact=not engine.ann,
            search_params=("ef", "exact") if engine.ann else (),
            persistent=engine.persistent,
            remote=engine.remote,
            excludes_in_search=True,
        )

    @classmethod
    def open(cls, uri: StoreURI, *, dim: int | None, metric: str | None) -> QdrantStore:
        engine = cls.engine_type.connect(uri)
        try:
            default_ef = uri.pop_int("ef")
            indexes = [f for f in (uri.pop("indexes") or "").split(",") if f]
            uri.done()
            with engine.guard():
                engine.attach(uri.raw, dim, metric)
                return cls(uri.raw, engine, default_ef, indexes)
        except BaseException:
            engine.close()
            raise

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        if self._closed:
            raise StoreError(f"{self.uri}: the store is closed")
        with self.engine.guard():
            yield

    # -- payload indexes -------------------------------------------------------------------

    @property
    def stale_graph(self) -> bool:
        """True when a payload index was added after the graph was built; `flush()`
        rebuilds the graph."""
        return self.engine.stale_graph

    def _ensure_index(self, key: str, schema: str) -> None:
        if key in self.indexed:
            return
        self.engine.create_index(key, schema)
        self.indexed.add(key)
        log.debug("%s: created %s payload index on %r", self.uri, schema, key)

    def _declare_fields(self, fields: dict[str, str]) -> None:
        if not self.engine.ann:
            return  # brute force: nothing to index
        with self.guard():
            for field, kind in fields.items():
                self._ensure_index(*field_schema(field, kind, self.engine.dialect))
                if field in self.pending_indexes:
                    self.pending_indexes.remove(field)

    def _index_named(self, metadata: Sequence[dict]) -> None:
        """Index the `indexes=` fields, typed by their first value in this batch."""
        for field in list(self.pending_indexes):
            value = next((m[field] for m in metadata if field in m), None)
            if value is not None:
                self._ensure_index(*field_schema(field, value_kind(value), self.engine.dialect))
                self.pending_indexes.remove(field)

    def _index_filtered(self, node: Node) -> None:
        if self.engine.ann:
            for key, schema in index_schema(node, self.engine.dialect).items():
                self._ensure_index(key, schema)

    # -- hooks -----------------------------------------------------------------------------

    def _upsert(self, batch: CheckedBatch) -> int:
        ids, vectors, metadata = batch.ids, batch.vectors, batch.metadata
        shadow = not self.engine.dialect.matches_bools
        payloads = [to_payload(i, m, shadow) for i, m in zip(ids, metadata, strict=True)]
        with self.guard():
            self._filters.clear()
            self.engine.upsert([point_id(i) for i in ids], vectors.tolist(), payloads)
            self._index_named(metadata)
        return len(ids)

    def _delete_ids(self, ids: list[str]) -> int:
        with self.guard():
            existing = [p.id for p in self.engine.retrieve([point_id(i) for i in ids], False)]
            if existing:
                self._filters.clear()
                self.engine.delete(existing)
        return len(existing)

    def _delete_filter(self, node: Node) -> int:
        qfilter = translate(node, self.engine.dialect)
        with self.guard():
            n = self.engine.count(qfilter)
            if n:
                self._filters.clear()
                self.engine.delete_filter(qfilter)
        return n

    def _fetch(self, ids: list[str]) -> list[Record]:
        with self.guard():
            points = self.engine.retrieve([point_id(i) for i in ids], True)
        by_id = {}
        for p in points:
            rid, meta = from_payload(p.payload)
            by_id[rid] = Record(rid, np.asarray(p.vector, dtype=np.float32), meta)
        return [by_id[i] for i in ids if i in by_id]

    def _ids(self) -> Iterator[str]:
        offset = None
        while True:
            with self.guard():
                points, offset = self.engine.scroll(offset, self.engine.upsert_chunk)
            yield from (from_payload(p.payload)[0] for p in points)
            if offset is None:
                return

    def _count(self, node: Node | None) -> int:
        with self.guard():
            if node is not None:
                self._index_filtered(node)
            return self.engine.count(translate(node, self.engine.dialect))

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        node: Node | None,
        params: dict[str, Any],
        exclude: Sequence[Collection[str]] | None,
    ) -> list[Hits]:
        """Excluded ids become a `must_not has_id` in each row's filter: one search at k."""
        ef, exact = search_options(params, self.default_ef)
        dialect = self.engine.dialect
        qfilter = translate(node, dialect)
        rows = queries.tolist()
        filters = [leave_out(qfilter, ex, dialect) for ex in exclude or [()] * len(rows)]
        with self.guard():
            if node is not None:
                self._index_filtered(node)
                ef, exact, gathered = self._plan(node, qfilter, ef, exact)
                if gathered is not None:
                    return self._search_gathered(gathered, queries, k, exclude)
            answers = self.engine.query(rows, filters, k, ef, exact)
            if self.engine.ann and not exact:
                self._answer_short_exactly(answers, rows, filters, k, qfilter)
        return [hits_from(points, self.metric == "l2") for points in answers]

    def _plan(
        self, node: Node, qfilter: Any, ef: int | None, exact: bool
    ) -> tuple[int | None, bool, Gathered | None]:
        """(ef, exact, gathered) for a filtered search: the store's own scan of the matches'
        gathered vectors where the engine allows it and they are few (SCAN_GAIN times what
        the graph search scores, ef * m); else the engine's exact search when they are at
        most EXACT_WORK times that; else its graph search at the ef asked for."""
        if not self.engine.ann or (exact and not self._gathers):
            return ef, exact, None
        key = repr(node)  # True and 1 differ in repr, not in ==
        state = self._filters.state(key, lambda: self.engine.count(qfilter))
        work = (ef or self.engine.default_ef) * self.engine.hnsw_m
        if self._gathers and (exact or state.matches <= SCAN_GAIN * work):
            gather = self.engine.matching_vectors  # type: ignore[attr-defined]
            gathered = self._filters.gathered(state, self.dim, lambda: gather(qfilter))
            if gathered is not None:
                return ef, True, gathered
        return ef, exact or state.matches <= EXACT_WORK * work, None

    def _search_gathered(
        self,
        gathered: Gathered,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[Collection[str]] | None,
    ) -> list[Hits]:
        """Exact hits from the gathered vectors, with payloads read for the hits alone."""
        answers = gathered.search(queries, k, self.metric, exclude)
        wanted = list({pid for points in answers for pid, _ in points})
        payloads = self.engine.payloads(wanted)  # type: ignore[attr-defined]
        out = []
        for points in answers:
            ids, scores, metadata = [], [], []
            for pid, score in points:
                rid, meta = from_payload(payloads[pid])
                ids.append(rid)
                scores.append(score)
                metadata.append(meta)
            out.append(Hits(ids, scores, metadata))
        return out

    def _answer_short_exactly(
        self,
        answers: list[list[Any]],
        rows: list[list[float]],
        filters: list[Any],
        k: int,
        qfilter: Any,
    ) -> None:
        """Search again, exactly, the rows that came back short of k while more points
        match their filter (a graph search can miss them)."""
        short = [i for i, points in enumerate(answers) if len(points) < k]
        if not short:
            return
        matched = self.engine.count(qfilter)
        short = [i for i in short if len(answers[i]) < matched]
        if short:
            again = self.engine.query(
                [rows[i] for i in short], [filters[i] for i in short], k, None, True
            )
            for i, points in zip(short, again, strict=True):
                answers[i] = points

    def _read_info(self) -> dict[str, Any] | None:
        return self.engine.read_info()

    def _write_info(self, raw: dict[str, Any]) -> None:
        with self.guard():
            self.engine.write_info(raw)

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self) -> None:
        """Rebuild a stale graph, then make every write durable (the edge engine builds its
        HNSW index here)."""
        with self.guard():
            if self.engine.stale_graph:
                self.engine.rebuild()
            self.engine.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self.engine.close()
