"""Calibration of a store's search effort to a target recall (`embedrec calibrate`).

Queries are a seeded sample of the store's own vectors, each searched as if its record were
not stored (`VectorStore.search_held_out`): the record is left out of the hits, and it does
not lead the search to the others. Merely dropping it from the hits reads high on graph
indexes: the search lands on the query's own node and follows that node's links, which are
its neighbours (FAISS HNSW32 on synthetic-100k at ef=16: 0.962 so, 0.938 on new queries).
FAISS searches a copy of its graph with the queries' links cut; Qdrant excludes them with a
filter, which its graph search does not walk through.

Exact answers are brute force, in float64, over every vector the store returns from `fetch`
(all its records, fetched in batches), with the query's own record left out. For a store
whose `fetch` returns quantised vectors (FAISS SQ8) that is exact over the quantised vectors:
the recall then measures the search, not the quantisation.

Recall is tie-aware recall@k as the bench computes it (`stores/recall/exact.py`). Search
params meet the target when a one-sided lower confidence bound on the mean recall over the
queries, by the normal approximation (mean - z * sd / sqrt(n)), is at least the target. With
one search param the grid is swept from cheap to expensive and the first value that meets it
is chosen (a few more are measured for the table); with several (IVF-PQ's nprobe and
k_factor), the whole product is swept and the fastest combination that meets it is chosen.

A search param's grid runs past the config's values, in steps of GRID_STEP, up to the value
at which the index is exhaustive (`VectorStore.exhaustive_params`: nprobe = nlist, ef = the
live count), capped at `max_effort`; values above that are dropped. So any target the index
can reach is reached, and one it cannot reach is reported as such.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from embedrec.common.config import load_model
from embedrec.common.progress import Progress
from embedrec.stores import ConfigError, VectorStore
from embedrec.stores.recall import exact as ann

FETCH_BATCH = 1000
GRID_STEP = 1.5
"""Ratio between the values a grid is extended by (the config's grids step by about 1.5x)."""
MAX_EFFORT = 16_384
"""Default cap on an extended grid: HNSW ef past it costs more than a flat scan of most
stores that need it, so a target that needs more is one for a Flat index."""
EXACT_NOTE = (
    "exact = brute force over the vectors the store's fetch returns (quantised ones for "
    "FAISS SQ8), each query's own record left out"
)


class CalibrateSettings(BaseModel):
    """The `[calibrate]` section (see configs/calibrate.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_recall: float = Field(0.95, gt=0, le=1)
    """The held-out recall@k the chosen search params must reach (by its lower confidence bound)."""
    k: int = Field(10, ge=1)
    """The k of recall@k."""
    queries: int = Field(500, ge=2)
    """Stored vectors sampled as queries (all of them in a smaller store)."""
    confidence: float = Field(0.95, ge=0.5, lt=1)
    """Of the one-sided lower bound on mean recall that must reach the target."""
    seed: int = 0
    """Seed of the sampled queries."""
    extra_steps: int = Field(1, ge=0)
    """One search param: values measured past the first that meets the target, for the
    table."""
    grids: dict[str, list[int]] = {}
    """Per search param (`ef`, `nprobe`, `k_factor`), its values from cheap to expensive."""
    max_effort: int = Field(MAX_EFFORT, ge=1)
    """The most a grid is extended to towards its exhaustive value (`ef` on a big store)."""


class CalibrateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    calibrate: CalibrateSettings


def load_calibrate_config(path: str | Path) -> CalibrateSettings:
    return load_model(path, CalibrateFile).calibrate


@dataclass
class Measurement:
    """One point of the grid measured: its search params, mean recall@k, the lower bound,
    ms per query."""

    params: dict[str, int]
    recall: float
    lower: float
    ms_per_query: float
    meets: bool


@dataclass
class Calibration:
    uri: str
    records: int
    queries: int
    k: int
    target: float
    confidence: float
    search_params: list[str]
    """The store's search params that the config has a grid for."""
    exhaustive: dict[str, int] = field(default_factory=dict)
    """Per search param, the value at which the index is exhaustive (where it has one)."""
    tops: dict[str, int] = field(default_factory=dict)
    """Per search param, the last value of its (extended) grid."""
    measurements: list[Measurement] = field(default_factory=list)
    chosen: Measurement | None = None
    stored: bool = False
    note: str = EXACT_NOTE

    @property
    def met(self) -> bool:
        return any(s.meets for s in self.measurements)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri, "records": self.records, "queries": self.queries, "k": self.k,
            "target_recall": self.target, "confidence": self.confidence,
            "search_params": self.search_params, "exhaustive": self.exhaustive,
            "grid_tops": self.tops,
            "measurements": [vars(s) for s in self.measurements],
            "chosen": self.chosen.params if self.chosen else None, "stored": self.stored,
            "met": self.met, "exact": self.note,
        }  # fmt: skip


def params_label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def lower_bound(recalls: np.ndarray, confidence: float) -> float:
    """One-sided lower confidence bound on the mean: mean - z * sd / sqrt(n)."""
    mean = float(recalls.mean())
    if len(recalls) < 2:
        return mean
    z = statistics.NormalDist().inv_cdf(confidence)
    return mean - z * float(recalls.std(ddof=1)) / math.sqrt(len(recalls))


def calibrated_params(store: VectorStore, cfg: CalibrateSettings) -> list[str]:
    """The store's search params that the config has a grid for."""
    return [p for p in store.capabilities.search_params if p in cfg.grids]


def extended(values: Sequence[int], exhaustive: int | None, max_effort: int) -> list[int]:
    """`values` (cheap to expensive) running on to `exhaustive`, the value past which more
    effort changes nothing, in steps of GRID_STEP: values above it dropped, the last value
    `exhaustive` itself, or `max_effort` (or the config's own top) when that is lower."""
    if exhaustive is None:
        return list(values)
    top = min(exhaustive, max(max_effort, max(values, default=1)))
    out = [v for v in values if v < top]
    value = max(values, default=1)
    while value < top and (value := max(value + 1, round(value * GRID_STEP))) < top:
        out.append(value)
    return [*out, top]


def grids(
    search_params: Sequence[str], cfg: CalibrateSettings, exhaustive: dict[str, int]
) -> dict[str, list[int]]:
    """Per search param, its values to sweep: the config's grid extended towards
    `exhaustive`."""
    return {k: extended(cfg.grids[k], exhaustive.get(k), cfg.max_effort) for k in search_params}


def grid(values: dict[str, list[int]]) -> list[dict[str, int]]:
    """Every combination of search params to try, cheap to expensive in the first; `[{}]`
    without any."""
    names = list(values)
    return [dict(zip(names, c, strict=True)) for c in itertools.product(*values.values())]


@dataclass
class Sample:
    """The store's vectors (by row), the sampled query rows and the exact answers."""

    ids: list[str]
    base: np.ndarray
    rows: np.ndarray
    truth: np.ndarray
    """Exact distances (queries, k), ascending, each query's own record left out."""

    def queries(self) -> np.ndarray:
        return self.base[self.rows]

    def query_ids(self) -> list[str]:
        return [self.ids[r] for r in self.rows.tolist()]

    @functools.cached_property
    def row_of(self) -> dict[str, int]:
        return {rid: n for n, rid in enumerate(self.ids)}


def read_vectors(store: VectorStore, ids: list[str], bar: Progress) -> tuple[list[str], np.ndarray]:
    """The vectors of `ids` as the store returns them (ids it lacks are left out)."""
    kept: list[str] = []
    parts = [np.zeros((0, store.dim), np.float32)]
    for start in range(0, len(ids), FETCH_BATCH):
        found, vectors = store.fetch_vectors(ids[start : start + FETCH_BATCH])
        kept += found
        parts.append(vectors)
        bar.update(len(ids[start : start + FETCH_BATCH]))
    return kept, np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def without_own(values: np.ndarray, rows: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each row of `values` (k + 1 columns) less the column where `rows` holds the query's
    own row, or less its last column where the own row is not among them."""
    n, width = rows.shape
    at = rows == own[:, None]
    pos = np.where(at.any(axis=1), at.argmax(axis=1), width - 1)
    keep = np.ones((n, width), bool)
    keep[np.arange(n), pos] = False
    return values[keep].reshape(n, width - 1)


def sample(
    store: VectorStore,
    cfg: CalibrateSettings,
    ids: list[str] | None,
    progress: bool,
    ids_from: object = "the ids given",
) -> Sample:
    """Fetch the store's vectors, draw the queries and compute their exact answers."""
    listed = store.ids() if ids is None else ids
    with Progress(len(listed), "calibrate: fetching", "vectors", enabled=progress) as bar:
        kept, base = read_vectors(store, listed, bar)
    if len(kept) < cfg.k + 2:
        found = f"{len(kept)} records"
        if ids is not None:
            none = "none" if not kept else f"only {len(kept)}"
            found = (
                f"{none} of the {len(ids)} ids in {ids_from} are in the store, which holds "
                f"{store.count()} records"
            )
        raise ValueError(
            f"{store.uri}: {found}: too few to calibrate recall@{cfg.k} (at least {cfg.k + 2})"
        )
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(len(kept), min(cfg.queries, len(kept)), replace=False))
    dist, found = ann.exact_knn(base, base[rows], cfg.k + 1, store.metric)
    return Sample(kept, base, rows, without_own(dist, found, rows))


def measure(
    store: VectorStore, s: Sample, params: dict[str, int], cfg: CalibrateSettings
) -> tuple[np.ndarray, float]:
    """Per-query recall@k at `params`, and the batch's milliseconds per query."""
    ids, queries = s.query_ids(), s.queries()
    start = time.perf_counter()
    hits = store.search_held_out(ids, cfg.k, params=params)
    ms = (time.perf_counter() - start) * 1e3 / len(ids)
    found = np.full((len(ids), cfg.k), -1, np.int64)
    for i, h in enumerate(hits):
        got = [s.row_of.get(rid, -1) for rid in h.ids[: cfg.k]]
        found[i, : len(got)] = got
    got_dist = ann.distances(store.metric, queries, s.base, found)
    return ann.recall_tie_aware(s.truth, got_dist), ms


def sweep(
    store: VectorStore,
    s: Sample,
    cal: Calibration,
    cfg: CalibrateSettings,
    progress: bool,
) -> None:
    """Measure the grid into `cal.measurements`: with one search param, until `extra_steps`
    past the first value that meets the target; with several, all of it."""
    points = grid(grids(cal.search_params, cfg, cal.exhaustive))
    store.search_held_out(s.query_ids(), cfg.k, params=points[0])  # warm-up, untimed
    remaining: int | None = None  # one search param: values still to measure past the first good
    with Progress(len(points), "calibrate: sweeping", "grid points", enabled=progress) as bar:
        for params in points:
            recalls, ms = measure(store, s, params, cfg)
            low = lower_bound(recalls, cfg.confidence)
            point = Measurement(params, float(recalls.mean()), low, ms, low >= cfg.target_recall)
            cal.measurements.append(point)
            bar.update(1, recall=point.recall, lower=low)
            if len(cal.search_params) != 1:
                continue
            if remaining is None and point.meets:
                remaining = cfg.extra_steps
            elif remaining is not None:
                remaining -= 1
            if remaining == 0:
                break


def choose(cal: Calibration) -> Measurement | None:
    """The cheapest search params that meet the target: the first in grid order with one,
    the fastest measured with several; None when none meets it or there is no search param."""
    good = [s for s in cal.measurements if s.meets]
    if not cal.search_params or not good:
        return None
    if len(cal.search_params) == 1:
        return good[0]
    return min(good, key=lambda s: s.ms_per_query)


def held_out_recall(
    store: VectorStore, ids: list[str], k: int, queries: int
) -> tuple[int, float] | None:
    """Mean held-out recall@k of `queries` stored vectors (a seeded sample of `ids`) at the
    store's own search defaults, and how many were searched: the recall a rebuild's
    validation demands. None for a store too small to measure (fewer than k + 2 records)."""
    if len(ids) < k + 2:
        return None
    cfg = CalibrateSettings(k=k, queries=max(queries, 2))
    s = sample(store, cfg, ids, progress=False)
    recalls, _ = measure(store, s, {}, cfg)
    return len(s.rows), float(recalls.mean())


def calibrate(
    store: VectorStore,
    cfg: CalibrateSettings,
    *,
    ids: list[str] | None = None,
    ids_from: object = "the ids given",
    progress: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> Calibration:
    """Measure recall@k over the store's grid and pick the cheapest search params that meet the
    target (stored by `save_defaults`). `ids`: the records to use, default all of them;
    `ids_from` names where they came from, for the error when too few are stored."""
    if not getattr(store, "built", True):  # FAISS IVF/PQ/SQ8 before flush() trains them
        raise ValueError(
            f"{store.uri}: the index is not built yet (it serves exact search until flush() "
            "trains it), so search params chosen now would not hold: calibrate after ingest"
        )
    names = calibrated_params(store, cfg)
    s = sample(store, cfg, ids, progress, ids_from)
    exhaustive = {k: v for k, v in store.exhaustive_params().items() if k in names}
    cal = Calibration(
        store.uri, len(s.ids), len(s.rows), cfg.k, cfg.target_recall, cfg.confidence, names,
        exhaustive, {k: v[-1] for k, v in grids(names, cfg, exhaustive).items()},
    )  # fmt: skip
    say(
        f"calibrate: {len(s.rows)} queries over {len(s.ids):,} records, "
        f"search params {', '.join(names) or 'none (measured recall only)'}"
    )
    sweep(store, s, cal, cfg, progress)
    cal.chosen = choose(cal)
    return cal


def save_defaults(store: VectorStore, cal: Calibration) -> None:
    """Keep the chosen search params as the store's search defaults (StoreInfo.search_defaults).

    A store with no StoreInfo is refused rather than given a made-up one: the info names the
    embedder that built the store, and an invented one would make `query`, `serve` and
    `ingest` use or refuse the wrong model."""
    if cal.chosen is None:
        raise ValueError(f"{store.uri}: no search params to store")
    info = store.info
    if info is None:
        raise ConfigError(
            f"{store.uri} has no store info (it was not written by `embedrec ingest`), so "
            "it has nowhere to keep search defaults: ingest it with embedrec, or pass "
            "--dry-run to measure only"
        )
    kept = {k: v for k, v in info.search_defaults.items() if k not in cal.search_params}
    store.set_info(replace(info, search_defaults={**kept, **cal.chosen.params}))
    store.flush()
    cal.stored = True
