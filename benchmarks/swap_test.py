"""Swap under load: a new two-tower model and its item store swapped in mid-run behind an alias.

    python benchmarks/swap_test.py [--clients 32] [--before 15] [--window 10] [--after 5]
                                   [--workers 2] [--reload-interval 0.5]

`embedrec serve`'s own multi-worker app (`embedrec.retrieval.commands:app_from_env`, uvicorn,
`--workers` processes) serves `/recommend` over `faiss:WORKDIR/items`, an alias whose live
generation g0001 holds the MovieLens catalog (1,682 items, HNSW32) under model A; the serve
config names no model, so each generation's store info says which one to load. Generation
g0002 holds the catalog under model B (the same small model trained from another seed) and is
built before the load starts. Closed-loop clients (this script's HTTP/1.1 client from
load_test.py, one keep-alive connection each, the 943 MovieLens users as requests) run for
before + window + after seconds; `--before` seconds in, the alias is swapped to g0002. Each
worker's poll (every `--reload-interval` s) sees it, loads model B and the new store, warms
them, swaps them in, and compares the two generations (the drift gauges) in the background.

Reported, by the time each answer came in: errors (any non-200 answer or dropped
connection) and latency percentiles before the swap and in the `--window` seconds from it,
p99 in each second around the swap, how long after the pointer swap each worker served the
new generation (from its log), and the drift gauges one worker exports. The target (#17):
0 errors, p99 in the window within 2x of p99 before it. The models are trained on first use
(two minutes or so on 2 cores) and kept in the work folder.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from load_test import _client, _free_port, _server_cpu  # noqa: E402 (a sibling script)

SWAPPED = re.compile(r"^(\d+\.\d+) .*now serving generation (g\d+) \(was (g\d+)\), loaded in")
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"stamped": {"format": "%(created).3f %(process)d %(name)s %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "stamped"}},
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "WARNING"},
        "embedrec": {"handlers": ["err"], "level": "INFO"},
    },
}
"""Uvicorn's loggers quiet, the reloader's swaps logged with their time (epoch seconds)."""


# -- the fixture: two models, an alias with one generation live and one built ----------------


def _model(work: Path, name: str, seed: int) -> Path:
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders.two_tower import TwoTowerConfig, fit_two_tower

    path = work / f"{name}.pt"
    if not path.exists():
        print(f"training two-tower model {name} (seed {seed}) ...", flush=True)
        ml = load_movielens()
        config = TwoTowerConfig(
            dim=32, hidden=64, text=False, epochs=3, batch_size=2048, val_fraction=0.0, seed=seed
        )
        fit_two_tower(ml.ratings, ml.users, ml.items, config).save(path)
    return path


def _generation(alias: str, model: Path):  # type: ignore[no-untyped-def]
    """A new generation of `alias` holding the catalog under `model`, its store info naming
    the model (as `embedrec ingest --rebuild` writes it); not swapped in."""
    from embedrec import open_store
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders.two_tower import TwoTowerItemEmbedder
    from embedrec.ingestion.store_info import describe
    from embedrec.stores.lifecycle.aliases import alias_book

    items = load_movielens().items
    generation = alias_book(alias).new_generation()
    embedder = TwoTowerItemEmbedder(model)
    meta = [
        {"title": r.title, "genres": list(r.genres)}
        | ({} if pd.isna(r.year) else {"year": int(r.year)})
        for r in items.itertuples()
    ]
    store = open_store(f"{generation.uri}?index=HNSW32", dim=embedder.dim)
    describe(store, f"two-tower:{model}", embedder, None)
    store.upsert(items["item_id"].tolist(), embedder.model.item_vectors(items), meta)
    store.close()
    return generation


def prepare(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The serve config and the generation to swap in; returns (config, generation, users)."""
    from embedrec.data.movielens import load_movielens
    from embedrec.stores.lifecycle.aliases import alias_book

    work = Path(args.workdir).resolve()  # the config's paths: absolute, not from its folder
    work.mkdir(parents=True, exist_ok=True)
    first, second = _model(work, "model-a", 42), _model(work, "model-b", 7)
    shutil.rmtree(work / "items", ignore_errors=True)  # each run starts from g0001
    alias = f"faiss:{work / 'items'}"
    alias_book(alias).swap(_generation(alias, first))
    swap_to = _generation(alias, second)
    ml = load_movielens()
    ml.users.to_parquet(work / "users.parquet")
    ml.ratings.to_parquet(work / "ratings.parquet")
    config = work / "serve.toml"
    config.write_text(
        f"[server]\nreload_interval_s = {args.reload_interval}\n"
        f"drift_sample = {args.drift_sample}\n"
        f'[two_tower]\nuri = "{alias}"\n'
        f'[users]\nusers = "{work / "users.parquet"}"\nratings = "{work / "ratings.parquet"}"\n'
    )
    return config, swap_to, ml.users["user_id"].tolist()


# -- the server (a child process) -------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from embedrec.retrieval.commands import CONFIG_ENV

    os.environ[CONFIG_ENV] = str(Path(args.workdir) / "serve.toml")
    uvicorn.run(
        "embedrec.retrieval.commands:app_from_env",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_config=LOG_CONFIG,
        access_log=False,
    )


def _start(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--workdir", args.workdir]
    cmd += ["--workers", str(args.workers)]
    env = {k: v for k, v in os.environ.items() if k != "EMBEDREC_API_KEY"} | {
        "OMP_NUM_THREADS": "1"
    }
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=log.open("w"))
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
            return server
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}") from None
            time.sleep(0.3)


# -- the load, with the swap in the middle ----------------------------------------------------


async def _load(args: argparse.Namespace, port: int, users: list[str], swap) -> tuple:  # type: ignore[no-untyped-def]
    """Every answer as (latency s, status, end time), and the swap's time in both clocks."""
    out: list[tuple[float, int, float]] = []
    start = time.perf_counter()
    until = time.monotonic() + args.before + args.window + args.after
    tasks = [asyncio.create_task(_client(port, users, until, out, n)) for n in range(args.clients)]
    await asyncio.sleep(args.before)
    swapped_at = (time.perf_counter(), time.time())
    await asyncio.to_thread(swap)
    await asyncio.gather(*tasks)
    return out, start, swapped_at


def _window(rows: list[tuple[float, int, float]]) -> dict:
    lat = np.array([r[0] for r in rows]) * 1000
    errors = sum(1 for r in rows if r[1] != 200)
    if not len(lat):
        return {"requests": 0, "errors": errors}
    return {
        "requests": len(rows),
        "errors": errors,
        **{f"p{p}_ms": round(float(np.percentile(lat, p)), 2) for p in (50, 95, 99)},
        "max_ms": round(float(lat.max()), 2),
    }


def report(args, out, start, swapped_at, log: Path, scraped: dict) -> dict:  # type: ignore[no-untyped-def]
    at_perf, at_epoch = swapped_at
    warm = start + 1.0  # the first second: connections opening
    before = [r for r in out if warm <= r[2] < at_perf]
    window = [r for r in out if at_perf <= r[2] < at_perf + args.window]
    after = [r for r in out if r[2] >= at_perf + args.window]
    by_second = {}
    for second in range(-3, int(args.window) + 1):
        rows = [r for r in out if at_perf + second <= r[2] < at_perf + second + 1]
        if rows:
            by_second[second] = round(float(np.percentile([r[0] for r in rows], 99)) * 1000, 2)
    swaps = [
        {"after_s": round(float(m[1]) - at_epoch, 2), "generation": m[2], "was": m[3]}
        for m in (SWAPPED.match(line) for line in log.read_text().splitlines())
        if m is not None
    ]
    b, w = _window(before), _window(window)
    return {
        "clients": args.clients,
        "workers": args.workers,
        "errors": sum(1 for r in out if r[1] != 200),
        "before": b,
        "swap_window": w | {"seconds": args.window},
        "after": _window(after),
        "p99_ratio_window_over_before": round(w["p99_ms"] / b["p99_ms"], 2),
        "p99_ms_by_second_from_swap": by_second,
        "workers_swapped": swaps,
        **scraped,
    }


def _scrape(port: int) -> dict:
    """The generation the workers answer with (/healthz: the service runs without an API
    key, so it shows them) and the drift gauges of whichever worker answers /metrics."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    seen = {
        httpx.get(f"{base}/healthz", timeout=10).json()["spaces"]["two-tower"]["generation"]
        for _ in range(20)
    }
    text = httpx.get(f"{base}/metrics", timeout=10).text
    drift = {
        line.split("{", 1)[0].removeprefix("embedrec_drift_"): round(
            float(line.rsplit(" ", 1)[1]), 4
        )
        for line in text.splitlines()
        if line.startswith("embedrec_drift_")
    }
    return {"generations_answering_after": sorted(seen), "drift_gauges_one_worker": drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--before", type=float, default=15.0, help="seconds before the swap")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of the swap window")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after the window")
    parser.add_argument("--workers", type=int, default=2, help="server processes (one per core)")
    parser.add_argument("--reload-interval", type=float, default=0.5, help="alias poll, s")
    parser.add_argument(
        "--drift-sample", type=int, default=500, help="server.drift_sample (0: no drift gauges)"
    )
    parser.add_argument("--workdir", default=str(ROOT / "bench-out/swap-test"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if not (1 <= args.clients <= 256 and args.before >= 3 and args.window >= 1):
        parser.error("--clients must be 1..256, --before at least 3 s, --window at least 1 s")
    import uvloop

    from embedrec.stores.lifecycle.aliases import alias_book

    _, swap_to, users = prepare(args)
    book = alias_book(f"faiss:{Path(args.workdir) / 'items'}")
    gc.freeze()  # the client's own full collections would stall it
    port = _free_port()
    log = Path(args.workdir) / "server.log"
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the test")
    server = _start(args, port, log)
    try:
        cpu = _server_cpu(server)
        cpu_before = cpu()
        out, start, swapped_at = uvloop.run(_load(args, port, users, lambda: book.swap(swap_to)))
        cpu_s = cpu() - cpu_before
        scraped = _scrape(port)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = report(args, out, start, swapped_at, log, scraped)
    result["server_cpu_us_per_request"] = round(cpu_s / max(len(out), 1) * 1e6)
    print(json.dumps(result, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f} after the test")
    (Path(args.workdir) / "swap_test.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
