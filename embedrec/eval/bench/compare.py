"""The store comparison runner behind `embedrec bench`: plan, run, collect.

Planning prepares each dataset (bench_data.py) and lists, per (dataset, store), the sweep's
measurements not yet in DIR/results.jsonl, with the reason for each store that cannot run
here. Running starts one fresh worker process per (dataset, store) (bench_worker.py), which
appends each finished measurement to DIR/results.jsonl; a rerun skips measurements already
there (the key includes the dataset's content hash and the store's URI), so an interrupted
run resumes where it stopped. Collecting reads back the rows of this plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from embedrec.common.progress import Progress
from embedrec.eval.bench.config import BenchConfig, BenchStore, DatasetConfig
from embedrec.eval.bench.datasets import Prepared, Skip, prepare
from embedrec.eval.bench.worker import Job
from embedrec.stores import ConfigError, missing_backend
from embedrec.stores.recall.calibrate import CalibrateSettings, load_calibrate_config

RESULTS = "results.jsonl"


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    datasets: list[Prepared]
    meta: dict[str, Any]


@dataclass
class Task:
    """One worker's share of the plan: the measurements of one store on one dataset."""

    dataset: Prepared
    store: BenchStore
    keys: list[str]
    params: list[dict[str, Any]]
    calibrated_key: str | None = None
    """The key of the measurement with the store's calibrated defaults, when still to do."""


@dataclass
class Plan:
    backends: dict[str, str | None]
    """Store name -> why its backend does not import here, or None."""
    tasks: list[Task] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    """Every measurement of the plan, those already done included."""
    datasets: list[Prepared] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    calibrate: CalibrateSettings | None = None
    """[run] calibrate's settings: each store is calibrated and measured at its defaults."""

    def skip(self, dataset: str, store: str, reason: str) -> None:
        self.skipped.append({"dataset": dataset, "store": store, "reason": reason})


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The last row of each key in a results JSONL; a torn last line is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                out[row["key"]] = row
    return out


def _key(ds: Prepared, store: BenchStore, params: dict[str, Any]) -> str:
    return "|".join((ds.id, store.name, store.uri, json.dumps(params, sort_keys=True)))


def _slug(text: str, limit: int = 45) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return slug[:limit].strip("-")


# -- plan ------------------------------------------------------------------------------------


def _backend_missing(store: BenchStore) -> str | None:
    try:
        return missing_backend(store.uri.split(":", 1)[0])
    except ConfigError as exc:
        return str(exc)


def _skip_reason(store: BenchStore, ds: Prepared, backend: str | None) -> str | None:
    """Why `store` cannot run on `ds` here, or None."""
    if backend is not None:
        return backend
    if store.max_n is not None and ds.n > store.max_n:
        return f"{ds.n:,} vectors is over the store's max_n {store.max_n:,}"
    if store.missing_env() and store.loopback is None:
        return f"set {', '.join(store.missing_env())} to include it"
    return None


def _plan_dataset(
    plan: Plan, d: DatasetConfig, ds: Prepared, cfg: BenchConfig, done: set[str]
) -> None:
    """Add the measurements of `ds` on each of its stores, or why a store is skipped."""
    for s in cfg.stores:
        if d.stores is not None and s.name not in d.stores:
            continue
        reason = _skip_reason(s, ds, plan.backends[s.name])
        if reason is not None:
            plan.skip(ds.name, s.name, reason)
            continue
        params = s.params() or ([] if plan.calibrate else [{}])
        keys = [_key(ds, s, p) for p in params]
        plan.keys += keys
        todo = [(k, p) for k, p in zip(keys, params, strict=True) if k not in done]
        calibrated = None
        if plan.calibrate is not None:
            calibrated = _key(ds, s, {"calibrated": plan.calibrate.model_dump()})
            plan.keys.append(calibrated)
            calibrated = None if calibrated in done else calibrated
        if todo or calibrated:
            keys, params = [k for k, _ in todo], [p for _, p in todo]
            plan.tasks.append(Task(ds, s, keys, params, calibrated))


def plan_bench(cfg: BenchConfig, out: Path, done: set[str], console: Any) -> Plan:
    """Prepare every dataset that some store runs on, and list what is left to measure."""
    plan = Plan(backends={s.name: _backend_missing(s) for s in cfg.stores})
    if cfg.run.calibrate is not None:
        plan.calibrate = load_calibrate_config(cfg.run.calibrate)
    for d in cfg.datasets:
        if not any(d.stores is None or s.name in d.stores for s in cfg.stores):
            continue
        try:
            with console.status(f"preparing {d.name}"):
                ds = prepare(d, cfg, out / "data")
        except Skip as exc:
            plan.skip(d.name, "*", str(exc))
            continue
        plan.datasets.append(ds)
        _plan_dataset(plan, d, ds, cfg, done)
    return plan


# -- run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pinecone_loopback() -> Iterator[dict[str, str]]:
    """A loopback Pinecone server, and the environment that points a store at it."""
    # imported here: only bench configs with a loopback store need the HTTP server's code
    from embedrec.testing.pinecone_loopback import LoopbackPinecone

    server = LoopbackPinecone()
    try:
        yield {"PINECONE_API_KEY": "loopback", "PINECONE_CONTROLLER_HOST": server.url}
    finally:
        server.close()


class _Loopbacks:
    """The loopback services of a run, each started at its first use, closed with `stack`."""

    def __init__(self, stack: contextlib.ExitStack):
        self.stack = stack
        self.started: dict[str, dict[str, str]] = {}

    def env(self, store: BenchStore) -> dict[str, str]:
        if store.loopback is None:
            return {}
        if store.loopback not in self.started:
            self.started[store.loopback] = self.stack.enter_context(_pinecone_loopback())
        return self.started[store.loopback]


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
            [sys.executable, "-m", "embedrec.eval.bench.worker", str(job_file)],
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


def _job(
    task: Task, plan: Plan, cfg: BenchConfig, out: Path, folder: Path | None, quick: bool
) -> Job:
    ds, s = task.dataset, task.store
    calibrate = plan.calibrate.model_dump() if plan.calibrate and task.calibrated_key else None
    return Job(
        dataset=asdict(ds), store=s.name, uri_template=s.uri,
        uri=s.expand(folder or Path(), _slug(f"eb-{ds.name}-{s.name}")),
        folder=str(folder) if folder else None, params=task.params, keys=task.keys,
        clients=cfg.run.clients, batch_size=cfg.run.batch_size, warmup=cfg.run.warmup,
        threads=cfg.run.threads, results=str(out / RESULTS), quick=quick,
        extra={"service": "pinecone loopback"} if s.loopback else {},
        calibrate=calibrate, calibrated_key=task.calibrated_key,
    )  # fmt: skip


def _run_task(
    task: Task, plan: Plan, cfg: BenchConfig, out: Path, quick: bool, **worker: Any
) -> str | None:
    """One worker over a fresh store folder (when the URI has `{dir}`), removed after."""
    ds, s = task.dataset, task.store
    folder = out / "stores" / _slug(f"{ds.id}-{s.name}", 120) if "{dir}" in s.uri else None
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _run_worker(_job(task, plan, cfg, out, folder, quick), out, **worker)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def run_plan(
    plan: Plan, cfg: BenchConfig, out: Path, quick: bool, console: Any, progress: bool = True
) -> None:
    """Run each task of `plan` in its worker; a task that fails is added to its skips."""
    total = sum(len(t.keys) + (t.calibrated_key is not None) for t in plan.tasks)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            Progress(total, "bench", "measurements", enabled=progress, stream=console.file)
        )
        loopbacks = _Loopbacks(stack)
        for task in plan.tasks:
            ds, s = task.dataset, task.store
            bar.describe(f"bench {ds.name} / {s.name}")
            env = loopbacks.env(s)
            error = _run_task(task, plan, cfg, out, quick, env=env, advance=bar.update)
            if error is not None:
                plan.skip(ds.name, s.name, error)
                console.print(f"[red]{ds.name} / {s.name}: {error}[/]")


# -- collect ---------------------------------------------------------------------------------


def collect(plan: Plan, cfg: BenchConfig, out: Path, quick: bool) -> Outcome:
    """The plan's rows as the results file holds them now, and the run's conditions."""
    finished = read_results(out / RESULTS)
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
    rows = [finished[k] for k in plan.keys if k in finished]
    return Outcome(rows=rows, skipped=plan.skipped, datasets=plan.datasets, meta=meta)


def run_bench(
    cfg: BenchConfig,
    out: Path,
    *,
    quick: bool = False,
    console: Any = None,
    progress: bool = True,
) -> Outcome:
    """Run every (dataset, store, params) not yet in OUT/results.jsonl; return the rows of
    this plan (resumed ones included) and what was skipped and why. Progress goes to
    `console`'s stream: a bar on a terminal, a line now and then otherwise."""
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    done = set(read_results(out / RESULTS))
    plan = plan_bench(cfg, out, done, console)
    resumed = sum(k in done for k in plan.keys)
    if resumed:
        console.print(f"resuming: {resumed} measurements already in {out / RESULTS}")
    run_plan(plan, cfg, out, quick, console, progress)
    return collect(plan, cfg, out, quick)
