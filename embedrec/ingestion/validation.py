"""Is a freshly built generation fit to go live? Three checks, before any swap:

- count: the store holds exactly the records the ingest made durable (its manifest's ids),
  with the catalogue events carried into it (live_replay.py);
- fetches: a sample of records, fetched back, equal what was written: the catalog row's
  metadata and the embedder's vector for it (from the embedding cache, so no model runs);
- recall: a sample of stored vectors, each searched with the store's default search as if
  its record were not stored, find at least `min_recall` of their exact top-k: the held-out
  recall `embedrec calibrate` measures (`stores/recall/calibrate.py`), tie-aware, against brute
  force
  over every stored vector. (Searching a stored vector plainly reads high on graph indexes,
  which start the search at the vector's own node.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedrec.common.vectors import l2_normalize
from embedrec.embedders import Embedder, EmbeddingCache, embed_cached
from embedrec.ingestion.manifest import IngestManifest
from embedrec.ingestion.rows import Row
from embedrec.ingestion.sources import Source
from embedrec.stores import Record, VectorStore
from embedrec.stores.base import check_metadata
from embedrec.stores.recall.calibrate import CalibrateSettings, held_out_recall

SEED = 0


@dataclass(frozen=True)
class Checks:
    """What `validate` demands; the defaults are those of `embedrec ingest --rebuild`."""

    min_recall: float = 0.9
    sample: int = 100
    """Records fetched and compared, and stored vectors searched as queries."""
    k: int = 10
    calibrate: CalibrateSettings | None = None
    """Calibrate the generation to this target recall before validating it
    (`ingest --rebuild --calibrate CONFIG`): its search defaults are then its own."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_recall <= 1.0:
            raise ValueError(f"min recall must lie in [0, 1], got {self.min_recall}")
        if self.sample < 1 or self.k < 1:
            raise ValueError(f"sample and k must be positive, got {self.sample} and {self.k}")


@dataclass
class Validation:
    expected: int
    count: int
    fetched: int = 0
    mismatches: list[str] = field(default_factory=list)
    """One line per sampled record that did not come back as written."""
    queries: int = 0
    recall: float | None = None

    def failures(self, checks: Checks) -> list[str]:
        out = []
        if self.expected == 0:
            out.append("count: the catalog gave no records to build from")
        elif self.count != self.expected:
            out.append(
                f"count: the generation holds {self.count:,} records, the ingest wrote "
                f"{self.expected:,}"
            )
        if self.mismatches:
            shown = "; ".join(self.mismatches[:3])
            out.append(
                f"fetch: {len(self.mismatches)} of {self.fetched} sampled records differ "
                f"from what was written ({shown})"
            )
        if self.recall is not None and self.recall < checks.min_recall:
            out.append(
                f"recall: recall@{checks.k} against exact search is {self.recall:.3f} "
                f"on {self.queries} stored vectors, below {checks.min_recall:g}"
            )
        return out

    def figures(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "expected": self.expected,
            "fetched": self.fetched,
            "fetch_mismatches": len(self.mismatches),
            "recall_queries": self.queries,
            "recall": None if self.recall is None else round(self.recall, 4),
        }


def validate(
    store: VectorStore,
    source: Source,
    embedder: Embedder,
    manifest: IngestManifest,
    checks: Checks,
    cache: EmbeddingCache,
    edits: Mapping[str, str] | None = None,
) -> Validation:
    """`edits`: catalogue events carried into the store (id -> op, live_replay.py): their
    records are the events', not the catalogue's, so they are counted but not compared."""
    edits = edits or {}
    ids = [rid for rid in manifest.ids() if rid not in edits]
    carried = sum(op != "removed" for op in edits.values())
    result = Validation(expected=len(ids) + carried, count=store.count())
    if not ids:
        return result
    sample = sorted(random.Random(SEED).sample(ids, min(checks.sample, len(ids))))
    records = store.fetch(sample)
    result.fetched = len(sample)
    result.mismatches = _mismatches(store, sample, records, source, embedder, cache)
    measured = held_out_recall(store, ids, checks.k, checks.sample)
    if measured is not None:
        result.queries, result.recall = measured
    return result


def catalog_rows(source: Source, wanted: set[str]) -> dict[str, Row]:
    """The catalog rows of `wanted` ids, as the ingest read them (the first row of an id)."""
    rows: dict[str, Row] = {}
    for chunk in source.chunks():
        for item in chunk:
            if isinstance(item, Row) and item.id in wanted and item.id not in rows:
                rows[item.id] = item
    return rows


def _plain(metadata: Any) -> str:
    return json.dumps(metadata, sort_keys=True, default=list, ensure_ascii=False)


def _mismatches(
    store: VectorStore,
    sample: list[str],
    records: list[Record],
    source: Source,
    embedder: Embedder,
    cache: EmbeddingCache,
) -> list[str]:
    got = {r.id: r for r in records}
    out = [f"{rid!r} is missing" for rid in sample if rid not in got]
    rows = catalog_rows(source, set(got))
    present = [got[rid] for rid in sample if rid in rows]
    if not present:
        return out
    inputs = [embedder.prepare(rows[r.id]) for r in present]
    vectors, _ = embed_cached(embedder, inputs, cache)
    if store.metric == "cosine":
        vectors = l2_normalize(vectors, zero_rows="keep")
    for record, want in zip(present, vectors, strict=True):
        if _plain(record.metadata) != _plain(check_metadata(record.id, rows[record.id].metadata)):
            out.append(f"{record.id!r} has metadata {_plain(record.metadata):.80}")
        elif not _same_vector(record.vector, want, store.capabilities.exact_vectors):
            out.append(f"{record.id!r} has another vector")
    return out


def _same_vector(got: np.ndarray, want: np.ndarray, exact: bool) -> bool:
    if exact:
        return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
    norms = float(np.linalg.norm(got) * np.linalg.norm(want)) or 1.0
    return float(got @ want) / norms >= 0.99  # quantised codes: the same direction
