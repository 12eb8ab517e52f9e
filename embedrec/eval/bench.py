"""The store comparison runner behind `embedrec bench`.

For every (dataset, store configuration) the runner starts a fresh Python process (a
"worker": `python -m embedrec.eval.bench JOB.json`) so that each store's memory is measured
from its own baseline. The worker loads the prepared vectors, then measures:

- ingest time (upserts in batches) and build time (`flush()`: index training/optimising
  and, for persistent stores, writing to disk);
- RSS growth over the loaded data and peak RSS growth during ingest + build (Linux's
  VmHWM, reset through /proc/self/clear_refs), and allocated bytes on disk;
- the harness's own cost per query: the timing loop run on a no-op with the same call shape;
- per value of the store's search-parameter sweep: recall@k against exact ground truth by
  id and tie-aware (eval/ann.py), latency percentiles of single queries (one client in a
  loop, which also gives QPS at 1 client), batch QPS (one call with every query), and QPS of
  `clients` threads issuing single queries concurrently.

Each finished (dataset, store, params) measurement is appended as one JSON line to
DIR/results.jsonl; a rerun skips measurements already there (the key includes the dataset's
content hash and the store's URI), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.eval import ann
from embedrec.eval.bench_config import (
    BenchConfig,
    DatasetConfig,
    FashionDataset,
    MovieLensTextDataset,
    PCADataset,
    StoreConfig,
    SyntheticDataset,
    TwoTowerDataset,
)
from embedrec.stores import REGISTRY, Hits

RESULTS = "results.jsonl"
MB = 1024 * 1024
HARNESS_REPEAT = 3


class Skip(Exception):
    """A dataset or store that cannot run here; the message says why."""


# -- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A dataset on disk (DIR/data/ID/*.npy) with its exact ground truth."""

    id: str
    name: str
    kind: str
    metric: str
    n: int
    nq: int
    dim: int
    k: int
    folder: str
    scale_group: str | None = None
    source: str | None = None
    full_dim: int | None = None
    """PCA datasets: the source and its dimension, in which ground truth and recall are
    computed."""


def _synthetic(d: SyntheticDataset, n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(d.seed)
    centres = rng.standard_normal((d.clusters, d.dim)).astype(np.float32)

    def draw(count: int, stream: int) -> np.ndarray:
        out = np.empty((count, d.dim), np.float32)
        r = np.random.default_rng([d.seed, stream])
        for s in range(0, count, 100_000):
            m = min(100_000, count - s)
            noise = r.standard_normal((m, d.dim), dtype=np.float32)
            out[s : s + m] = centres[r.integers(0, d.clusters, m)] + d.spread * noise
        return out

    return draw(n, 1), draw(nq, 2)


def _movielens_text(d: MovieLensTextDataset) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    from embedrec.embedders.cache import EmbeddingCache, embed_cached
    from embedrec.embedders.text import TextEmbedder
    from embedrec.ingestion.datasets import load_movielens

    items = load_movielens().items
    texts = [
        d.template.format(
            title=row.title,
            year="" if pd.isna(row.year) else int(row.year),
            genres="|".join(row.genres),
        )
        for row in items.itertuples()
    ]
    with EmbeddingCache() as cache:
        vectors, _ = embed_cached(TextEmbedder(), texts, cache)
    order = np.random.default_rng(d.seed).permutation(len(vectors))
    n_queries = max(1, round(d.query_fraction * len(vectors)))
    return vectors[order[n_queries:]], vectors[order[:n_queries]]


def _two_tower(d: TwoTowerDataset) -> tuple[np.ndarray, np.ndarray]:
    if not d.model.is_file():
        raise Skip(f"no two-tower model at {d.model} (train one with `embedrec train CONFIG`)")
    from embedrec.embedders.two_tower import TwoTowerModel
    from embedrec.ingestion.datasets import load_movielens

    ml = load_movielens()
    model = TwoTowerModel.load(d.model)
    return model.item_vectors(ml.items), model.user_vectors(ml.users)


def _raw_vectors(d: DatasetConfig, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(base, queries, metric) before the n / queries caps; PCA datasets reduce later."""
    if isinstance(d, FashionDataset):
        from embedrec.ingestion.datasets import load_fashion_mnist

        fm = load_fashion_mnist()
        base = fm.train_images.reshape(len(fm.train_images), -1).astype(np.float32)
        return base, fm.test_images.reshape(len(fm.test_images), -1).astype(np.float32), d.metric
    if isinstance(d, MovieLensTextDataset):
        return (*_movielens_text(d), d.metric)
    if isinstance(d, TwoTowerDataset):
        return (*_two_tower(d), d.metric)
    if isinstance(d, SyntheticDataset):
        return (*_synthetic(d, d.n, d.queries), d.metric)
    if isinstance(d, PCADataset):
        return _raw_vectors(cfg.dataset(d.source), cfg)
    raise TypeError(f"unknown dataset kind {type(d).__name__}")


def _dataset_id(d: DatasetConfig, cfg: BenchConfig, k: int) -> str:
    parts = [d.model_dump(mode="json"), k]
    if isinstance(d, PCADataset):
        parts.append(cfg.dataset(d.source).model_dump(mode="json"))
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]
    return f"{d.name}-{digest}"


def prepare(d: DatasetConfig, cfg: BenchConfig, root: Path) -> Prepared:
    """Load (or reuse from `root`) the dataset's vectors and exact ground truth."""
    k = cfg.run.k
    did = _dataset_id(d, cfg, k)
    folder = root / did
    meta = folder / "meta.json"
    if meta.is_file():
        return Prepared(**json.loads(meta.read_text()))
    base, queries, metric = _raw_vectors(d, cfg)
    base, queries = base[: d.n], queries[: d.queries]
    if len(base) < k:
        raise Skip(f"dataset {d.name!r} has {len(base)} base vectors, fewer than k={k}")
    tmp = root / f".{did}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    source, full_dim = None, None
    if isinstance(d, PCADataset):
        source = d.source
        full_dim = base.shape[1]
        np.save(tmp / "eval_base.npy", base)
        np.save(tmp / "eval_queries.npy", queries)
        gt_dist, gt_rows = ann.exact_knn(base, queries, k, metric)
        base, queries = ann.pca_reduce(base, queries, d.dim)
    else:
        gt_dist, gt_rows = ann.exact_knn(base, queries, k, metric)
    np.save(tmp / "base.npy", np.ascontiguousarray(base, dtype=np.float32))
    np.save(tmp / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    np.save(tmp / "gt_rows.npy", gt_rows)
    np.save(tmp / "gt_dist.npy", gt_dist)
    prepared = Prepared(
        id=did, name=d.name, kind=d.kind, metric=metric, n=len(base), nq=len(queries),
        dim=base.shape[1], k=k, folder=str(folder), scale_group=d.scale_group, source=source,
        full_dim=full_dim,
    )  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(asdict(prepared), indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return prepared


# -- measuring (in the worker) --------------------------------------------------------------


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
        import psutil

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


def _measure(
    store: Any, params: dict[str, Any], data: dict[str, np.ndarray], job: Job, ds: Prepared
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


def run_job(job: Job) -> None:
    import faiss

    from embedrec import open_store

    if job.threads is not None:
        faiss.omp_set_num_threads(job.threads)
    ds = Prepared(**job.dataset)
    data = _load(ds)
    base = data["base"]
    ids = [str(i) for i in range(len(base))]
    memory = Memory()
    store = open_store(job.uri, dim=ds.dim, metric=ds.metric)
    if store.count():  # a server collection left over from an interrupted run
        store.delete(filter={})
        store.flush()
    step = min(job.batch_size, store.capabilities.max_batch)
    start = time.perf_counter()
    for s in range(0, len(base), step):
        store.upsert(ids[s : s + step], base[s : s + step])
    ingest = time.perf_counter() - start
    start = time.perf_counter()
    store.flush()
    build = time.perf_counter() - start
    if store.count() != len(base):
        raise RuntimeError(
            f"{job.uri}: holds {store.count()} vectors after ingest, expected {len(base)}"
        )
    common = {
        "dataset": ds.name, "dataset_id": ds.id, "kind": ds.kind, "metric": ds.metric,
        "n": ds.n, "nq": ds.nq, "dim": ds.dim, "source": ds.source, "full_dim": ds.full_dim,
        "k": ds.k,
        "scale_group": ds.scale_group, "store": job.store, "uri": job.uri_template,
        "exact": store.capabilities.exact, "quick": job.quick,
        "ingest_s": ingest, "build_s": build, "rss_growth_mb": memory.growth_mb(),
        "rss_peak_growth_mb": memory.peak_growth_mb(),
        "disk_mb": disk_bytes(Path(job.folder)) / MB if job.folder else None,
        **harness_overhead(list(data["queries"]), ds.k), **job.extra,
    }  # fmt: skip
    remote = store.capabilities.persistent and job.folder is None
    try:
        for key, params in zip(job.keys, job.params, strict=True):
            row = {
                "key": key,
                "params": params,
                "param": ",".join(f"{k}={v}" for k, v in params.items()) or "-",
                **common,
                **_measure(store, params, data, job, ds),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            with open(job.results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print("row", flush=True)
    finally:
        if remote:  # leave no benchmark data on a server
            store.delete(filter={})
        store.close()


# -- planning and running (in the parent) ---------------------------------------------------


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    datasets: list[Prepared]
    meta: dict[str, Any]


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The last row of each key in a results JSONL; a torn last line is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                out[row["key"]] = row
    return out


def _key(ds: Prepared, store: StoreConfig, params: dict[str, Any]) -> str:
    return "|".join((ds.id, store.name, store.uri, json.dumps(params, sort_keys=True)))


def _slug(text: str, limit: int = 45) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return slug[:limit].strip("-")


def _store_module_error(store: StoreConfig) -> str | None:
    scheme = store.uri.split(":", 1)[0]
    if scheme not in REGISTRY:
        return f"unknown store scheme {scheme!r}"
    module, _, extra = REGISTRY[scheme]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} does not import ({exc}); pip install '{extra}'"
    return None


@contextlib.contextmanager
def _pinecone_loopback() -> Iterator[dict[str, str]]:
    """The tests/ loopback Pinecone server, and the environment that points a store at it."""
    path = Path(__file__).resolve().parents[2] / "tests" / "pinecone_loopback.py"
    if not path.is_file():
        raise Skip(f"the Pinecone loopback needs a repository checkout ({path} is absent)")
    spec = importlib.util.spec_from_file_location("embedrec_bench_pinecone_loopback", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    server = module.LoopbackPinecone()
    try:
        yield {"PINECONE_API_KEY": "loopback", "PINECONE_CONTROLLER_HOST": server.url}
    finally:
        server.close()


def _run_worker(
    job: Job, out: Path, env: dict[str, str], advance: Callable[[], None]
) -> str | None:
    """Run `job` in a fresh process; None on success, else the last line of its error."""
    jobs = out / "jobs"
    jobs.mkdir(exist_ok=True)
    name = _slug(f"{job.dataset['id']}--{job.store}", 120)
    job_file = jobs / f"{name}.json"
    job_file.write_text(json.dumps(asdict(job), indent=1))
    log = jobs / f"{name}.log"
    full_env = dict(os.environ)
    if job.threads is not None:
        full_env["OMP_NUM_THREADS"] = str(job.threads)
    if env:  # a loopback service: its variables, and no PINECONE_HOST to override them
        full_env.pop("PINECONE_HOST", None)
        full_env.update(env)
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedrec.eval.bench", str(job_file)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=full_env,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "row":
                advance()
        code = proc.wait()
    if code == 0:
        return None
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    return f"worker exited {code}: {lines[-1] if lines else 'no output'} (log: {log})"


def run_bench(cfg: BenchConfig, out: Path, *, quick: bool = False, console: Any = None) -> Outcome:
    """Run every (dataset, store, params) not yet in OUT/results.jsonl; return the rows of
    this plan (resumed ones included) and what was skipped and why."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    done = read_results(results)
    skipped: list[dict[str, str]] = []
    module_errors = {s.name: _store_module_error(s) for s in cfg.stores}
    prepared: list[Prepared] = []
    plan: list[tuple[Prepared, StoreConfig, list[str], list[dict[str, Any]]]] = []
    planned_keys: list[str] = []
    for d in cfg.datasets:
        stores = [s for s in cfg.stores if d.stores is None or s.name in d.stores]
        if not stores:
            continue
        try:
            with console.status(f"preparing {d.name}"):
                ds = prepare(d, cfg, out / "data")
        except Skip as exc:
            skipped.append({"dataset": d.name, "store": "*", "reason": str(exc)})
            continue
        prepared.append(ds)
        for s in stores:
            reason = module_errors[s.name]
            if reason is None and s.max_n is not None and ds.n > s.max_n:
                reason = f"{ds.n:,} vectors is over the store's max_n {s.max_n:,}"
            if reason is None and s.missing_env() and s.loopback is None:
                reason = f"set {', '.join(s.missing_env())} to include it"
            if reason is not None:
                skipped.append({"dataset": ds.name, "store": s.name, "reason": reason})
                continue
            params = s.params() or [{}]
            keys = [_key(ds, s, p) for p in params]
            planned_keys += keys
            todo = [(k, p) for k, p in zip(keys, params, strict=True) if k not in done]
            if todo:
                plan.append((ds, s, [k for k, _ in todo], [p for _, p in todo]))
    total = sum(len(keys) for _, _, keys, _ in plan)
    resumed = len([k for k in planned_keys if k in done])
    if resumed:
        console.print(f"resuming: {resumed} measurements already in {results}")
    loopbacks: dict[str, dict[str, str]] = {}
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
        )
        task = progress.add_task("bench", total=total)
        for ds, s, keys, params in plan:
            env: dict[str, str] = {}
            if s.loopback is not None:
                try:
                    if s.loopback not in loopbacks:
                        loopbacks[s.loopback] = stack.enter_context(_pinecone_loopback())
                except Skip as exc:
                    skipped.append({"dataset": ds.name, "store": s.name, "reason": str(exc)})
                    progress.advance(task, len(keys))
                    continue
                env = loopbacks[s.loopback]
            folder = out / "stores" / _slug(f"{ds.id}-{s.name}", 120) if "{dir}" in s.uri else None
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
                folder.parent.mkdir(parents=True, exist_ok=True)
            job = Job(
                dataset=asdict(ds), store=s.name, uri_template=s.uri,
                uri=s.expand(folder or Path(), _slug(f"eb-{ds.name}-{s.name}")),
                folder=str(folder) if folder else None, params=params, keys=keys,
                clients=cfg.run.clients, batch_size=cfg.run.batch_size, warmup=cfg.run.warmup,
                threads=cfg.run.threads, results=str(results), quick=quick,
                extra={"service": "pinecone loopback"} if s.loopback else {},
            )  # fmt: skip
            progress.update(task, description=f"{ds.name} / {s.name}")
            error = _run_worker(job, out, env, lambda: progress.advance(task))
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            if error is not None:
                skipped.append({"dataset": ds.name, "store": s.name, "reason": error})
                console.print(f"[red]{ds.name} / {s.name}: {error}[/]")
    finished = read_results(results)
    rows = [finished[k] for k in planned_keys if k in finished]
    meta = {
        "quick": quick,
        "k": cfg.run.k,
        "target_recall": cfg.run.target_recall,
        "clients": [1, *cfg.run.clients],
        "threads": cfg.run.threads,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "python": sys.version.split()[0],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return Outcome(rows=rows, skipped=skipped, datasets=prepared, meta=meta)


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m embedrec.eval.bench JOB.json", file=sys.stderr)
        return 2
    run_job(Job(**json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
