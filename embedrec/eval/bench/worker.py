"""One bench worker: builds one store over one prepared dataset and measures it.

The parent starts each worker as a fresh process (`python -m embedrec.eval.bench.worker
JOB.json`) so that each store's memory is measured from its own baseline. The worker loads
the prepared vectors, then measures:

- ingest time (upserts in batches) and build time (`flush()`: index training/optimising
  and, for persistent stores, writing to disk);
- RSS growth over the loaded data and peak RSS growth during ingest + build (Linux's
  VmHWM, reset through /proc/self/clear_refs), and allocated bytes on disk;
- the harness's own cost per query: the timing loop run on a no-op with the same call shape;
- with `[run] calibrate`: the store calibrated to the target (stores/recall/calibrate.py), its
  choice
  kept as its search defaults, and one more measurement with no params, which uses them;
- per value of the store's search-parameter sweep: recall@k against exact ground truth by
  id and tie-aware (stores/recall/exact.py), latency percentiles of single queries (one client in a
  loop, which also gives QPS at 1 client), batch QPS (one call with every query), and QPS of
  `clients` threads issuing single queries concurrently.

Each finished (dataset, store, params) measurement is appended as one JSON line to the
results file, and "row" is printed to stdout for the parent's progress bar.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from embedrec.eval.bench.datasets import Prepared
from embedrec.stores import Hits, StoreInfo, VectorStore, open_store
from embedrec.stores.recall import exact as ann
from embedrec.stores.recall.calibrate import (
    CalibrateSettings,
    calibrate,
    params_label,
    save_defaults,
)

MB = 1024 * 1024
HARNESS_REPEAT = 3


def time_each(fn: Callable[[np.ndarray], object], queries: list[np.ndarray]) -> np.ndarray:
    """Seconds of each call `fn(q)`, one query after the other."""
    out = np.empty(len(queries))
    clock = time.perf_counter
    for i, q in enumerate(queries):
        start = clock()
        fn(q)
        out[i] = clock() - start
    return out


def time_concurrent(
    fn: Callable[[np.ndarray], object], queries: list[np.ndarray], clients: int
) -> float:
    """Wall seconds for `clients` threads to run every query once between them."""
    barrier = threading.Barrier(clients + 1)

    def client(part: list[np.ndarray]) -> None:
        barrier.wait()
        for q in part:
            fn(q)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, queries[i::clients]) for i in range(clients)]
        barrier.wait()
        start = time.perf_counter()
        for f in futures:
            f.result()
        return time.perf_counter() - start


def _noop(q: np.ndarray, k: int, params: dict[str, Any]) -> None:
    return None


def harness_overhead(queries: list[np.ndarray], k: int) -> dict[str, float]:
    """What the timing loop adds per query (a no-op called the way a store is), and the
    highest QPS the concurrent driver can deliver (a no-op at 16 clients)."""
    noop = functools.partial(_noop, k=k, params={})
    loops, medians = [], []
    for _ in range(HARNESS_REPEAT):  # the least of a few runs: noise only ever adds
        start = time.perf_counter()
        medians.append(float(np.median(time_each(noop, queries))))
        loops.append(time.perf_counter() - start)
    return {
        "harness_us_per_query": min(loops) / len(queries) * 1e6,
        "harness_timed_us": min(medians) * 1e6,
        "harness_max_qps_16": ann.qps(len(queries), time_concurrent(noop, queries, 16)),
    }


class Memory:
    """RSS of this process relative to a baseline taken at construction."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        gc.collect()
        self.base = self._process.memory_info().rss
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._peak_resettable = True
        except OSError:
            self._peak_resettable = False

    def growth_mb(self) -> float:
        return (self._process.memory_info().rss - self.base) / MB

    def peak_growth_mb(self) -> float | None:
        """Peak RSS since the baseline, minus the baseline; None where it cannot be reset."""
        if not self._peak_resettable:
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return (int(line.split()[1]) * 1024 - self.base) / MB
        return None


def disk_bytes(folder: Path) -> int:
    """Bytes allocated on disk under `folder` (sparse preallocations count what they use)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _row_rows(hits: list[Hits], k: int) -> np.ndarray:
    rows = np.full((len(hits), k), -1, dtype=np.int64)
    for i, row in enumerate(hits):
        ids = list(map(int, row.ids[:k]))
        rows[i, : len(ids)] = ids
    return rows


@dataclass
class Job:
    """One worker's task: build one store over one prepared dataset, measure each params."""

    dataset: dict[str, Any]
    store: str
    uri_template: str
    uri: str
    folder: str | None
    params: list[dict[str, Any]]
    keys: list[str]
    clients: list[int]
    batch_size: int
    warmup: int
    threads: int | None
    results: str
    quick: bool
    extra: dict[str, Any] = field(default_factory=dict)
    calibrate: dict[str, Any] | None = None
    """CalibrateSettings to calibrate the store with before measuring `calibrated_key`."""
    calibrated_key: str | None = None


def _measure(
    store: VectorStore, params: dict[str, Any], data: dict[str, np.ndarray], job: Job, ds: Prepared
) -> dict[str, Any]:
    k = ds.k
    queries = data["queries"]
    singles = list(queries)
    fn = functools.partial(store.search, k=k, params=params)
    time_each(fn, singles[: job.warmup])
    start = time.perf_counter()
    latencies = time_each(fn, singles)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    hits = store.search(queries, k, params=params)
    batch = time.perf_counter() - start
    found = _row_rows(hits, k)
    found_dist = ann.distances(ds.metric, data["eval_queries"], data["eval_base"], found)
    by_id = ann.recall_by_id(data["gt_rows"], found)
    tie = ann.recall_tie_aware(data["gt_dist"], found_dist)
    row: dict[str, Any] = {
        "recall": float(tie.mean()),
        "recall_by_id": float(by_id.mean()),
        "recall_min": float(tie.min()),
        **{f"{p}_ms": v for p, v in ann.latency_percentiles(latencies).items()},
        "mean_ms": float(latencies.mean() * 1e3),
        "qps_1": ann.qps(len(singles), loop),
        "qps_batch": ann.qps(len(singles), batch),
    }
    for c in job.clients:
        row[f"qps_{c}"] = ann.qps(len(singles), time_concurrent(fn, singles, c))
    return row


def _load(ds: Prepared) -> dict[str, np.ndarray]:
    folder = Path(ds.folder)
    data = {
        name: np.load(folder / f"{name}.npy") for name in ("base", "queries", "gt_rows", "gt_dist")
    }
    pca = ds.full_dim is not None
    data["eval_base"] = np.load(folder / "eval_base.npy") if pca else data["base"]
    data["eval_queries"] = np.load(folder / "eval_queries.npy") if pca else data["queries"]
    return data


def _build(store: VectorStore, base: np.ndarray, batch_size: int) -> tuple[float, float]:
    """Upsert every base vector, then flush: (ingest seconds, build seconds)."""
    if store.count():  # a server collection left over from an interrupted run
        store.delete(filter={})
        store.flush()
    ids = [str(i) for i in range(len(base))]
    step = min(batch_size, store.capabilities.max_batch)
    start = time.perf_counter()
    for s in range(0, len(base), step):
        store.upsert(ids[s : s + step], base[s : s + step])
    ingest = time.perf_counter() - start
    start = time.perf_counter()
    store.flush()
    build = time.perf_counter() - start
    if store.count() != len(base):
        raise RuntimeError(
            f"{store.uri}: holds {store.count()} vectors after ingest, expected {len(base)}"
        )
    return ingest, build


def _common(job: Job, ds: Prepared, store: VectorStore, memory: Memory) -> dict[str, Any]:
    """The columns every row of this job shares: the dataset, the store, its build costs."""
    return {
        "dataset": ds.name, "dataset_id": ds.id, "kind": ds.kind, "metric": ds.metric,
        "n": ds.n, "nq": ds.nq, "dim": ds.dim, "source": ds.source, "full_dim": ds.full_dim,
        "k": ds.k, "scale_group": ds.scale_group, "store": job.store, "uri": job.uri_template,
        "exact": store.capabilities.exact, "quick": job.quick,
        "rss_growth_mb": memory.growth_mb(), "rss_peak_growth_mb": memory.peak_growth_mb(),
        "disk_mb": disk_bytes(Path(job.folder)) / MB if job.folder else None, **job.extra,
    }  # fmt: skip


def _calibrated(store: VectorStore, job: Job, ds: Prepared) -> dict[str, Any]:
    """Calibrate the store and keep its choice as search defaults; the row's columns. The
    bench's store holds bare vectors, so it is first described as the dataset's."""
    assert job.calibrate is not None
    if store.info is None:
        store.set_info(StoreInfo(f"bench:{ds.name}", ds.id, ds.dim, "vector", ds.metric))
    start = time.perf_counter()
    cal = calibrate(store, CalibrateSettings(**job.calibrate), progress=False)
    if cal.chosen is not None:
        save_defaults(store, cal)
    shown = cal.chosen or max(cal.measurements, key=lambda s: s.lower)
    return {
        "param": f"calibrated {params_label(cal.chosen.params) if cal.chosen else '(none)'}",
        "calibrated": cal.chosen.params if cal.chosen else {},
        "calibration_recall": shown.recall, "calibration_lower": shown.lower,
        "calibrate_s": time.perf_counter() - start,
    }  # fmt: skip


def _write_row(job: Job, row: dict[str, Any]) -> None:
    with open(job.results, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    print("row", flush=True)


def run_job(job: Job) -> None:
    import faiss  # the worker alone sets FAISS's threads, before any index exists

    if job.threads is not None:
        faiss.omp_set_num_threads(job.threads)
    ds = Prepared(**job.dataset)
    data = _load(ds)
    memory = Memory()
    store = open_store(job.uri, dim=ds.dim, metric=ds.metric)
    remote = store.capabilities.persistent and job.folder is None
    try:
        ingest, build = _build(store, data["base"], job.batch_size)
        common = _common(job, ds, store, memory) | {"ingest_s": ingest, "build_s": build}
        common |= harness_overhead(list(data["queries"]), ds.k)
        calibrated = _calibrated(store, job, ds) if job.calibrated_key else None
        for key, params in zip(job.keys, job.params, strict=True):
            param = ",".join(f"{k}={v}" for k, v in params.items()) or "-"
            measured = _measure(store, params, data, job, ds)
            _write_row(job, {"key": key, "params": params, "param": param, **common, **measured})
        if calibrated is not None:  # no params: the store's calibrated defaults
            measured = _measure(store, {}, data, job, ds)
            row = {"key": job.calibrated_key, "params": {}, **common, **calibrated, **measured}
            _write_row(job, row)
    finally:
        if remote:  # leave no benchmark data on a server
            store.delete(filter={})
        store.close()


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m embedrec.eval.bench.worker JOB.json", file=sys.stderr)
        return 2
    run_job(Job(**json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
