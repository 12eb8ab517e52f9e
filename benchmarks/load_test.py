"""Load test of `/recommend` on loopback: closed-loop clients against `embedrec serve`'s app.

    python benchmarks/load_test.py [--clients 32] [--duration 30] [--workers 2]
                                   [--model data/demo/two_tower.pt]

The MovieLens catalog (1,682 items) as two-tower item vectors in FAISS HNSW32 (a primary
and a replica store), the 943 MovieLens users as the requests' users. Two phases, each
against a fresh server (uvicorn, `--workers` processes, default 2: one per core) on 127.0.0.1:

1. healthy: the primary answers everything;
2. failing: the primary starts raising `StoreUnavailable` `--fail-at` seconds in; the
   replica takes over. The fallback counter from /metrics is sampled as it rises (with
   several workers, /metrics answers for whichever worker serves it: each counts its own).

Each client sends one request at a time over a keep-alive connection (a minimal HTTP/1.1
client, so that the client side costs little of the shared CPU) and records latency and
status. Without `--model` (or where it does not exist) a small two-tower model is trained
first (a minute or two on 2 cores). Bounded: at most 256 clients and 120 s per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- the server side (a child process) --------------------------------------------------------


def failing_after(store, fail_at_s: float):  # type: ignore[no-untyped-def]
    """A fault injector around a real store: every call raises StoreUnavailable once
    `fail_at_s` seconds have passed since the first call."""
    from embedrec import StoreUnavailable, VectorStore

    class FailingStore(VectorStore):
        def __init__(self) -> None:
            self.uri = f"failing+{store.uri}"
            self.dim, self.metric, self.capabilities = store.dim, store.metric, store.capabilities
            self._start: float | None = None
            self._lock = threading.Lock()

        @classmethod
        def open(cls, uri, *, dim, metric):  # type: ignore[no-untyped-def]
            raise NotImplementedError("wraps an open store")

        def _check(self) -> None:
            with self._lock:
                if self._start is None:
                    self._start = time.monotonic()
            if time.monotonic() - self._start >= fail_at_s:
                raise StoreUnavailable(f"{self.uri}: injected failure")

        def _search(self, queries, k, node, params):  # type: ignore[no-untyped-def]
            self._check()
            return store._search(queries, k, node, params)

        def _search_excluding(self, queries, k, node, params, exclude):  # type: ignore[no-untyped-def]
            self._check()
            return store._search_excluding(queries, k, node, params, exclude)

        def _fetch(self, ids):  # type: ignore[no-untyped-def]
            self._check()
            return store._fetch(ids)

        def _count(self, node):  # type: ignore[no-untyped-def]
            self._check()
            return store._count(node)

        def _upsert(self, ids, vectors, metadata):  # type: ignore[no-untyped-def]
            raise StoreUnavailable(f"{self.uri} is read-only in the load test")

        def _delete_ids(self, ids):  # type: ignore[no-untyped-def]
            raise StoreUnavailable(f"{self.uri} is read-only in the load test")

        def _delete_filter(self, node):  # type: ignore[no-untyped-def]
            raise StoreUnavailable(f"{self.uri} is read-only in the load test")

    return FailingStore()


def make_app():  # type: ignore[no-untyped-def]
    """The app of one server process, from the options in $LOAD_TEST_SERVER (JSON): uvicorn
    starts each worker from this import string."""
    import faiss

    from embedrec import open_store
    from embedrec.embedders.two_tower import TwoTowerModel
    from embedrec.ingestion.datasets import load_movielens
    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.client import Failover, Interactions, Recommender

    opts = json.loads(os.environ["LOAD_TEST_SERVER"])
    faiss.omp_set_num_threads(opts["omp_threads"])
    work = Path(opts["workdir"])
    primary = open_store(f"faiss:{work / 'primary'}")
    replica = open_store(f"faiss:{work / 'replica'}") if opts["fail_at"] is not None else None
    if opts["fail_at"] is not None:
        primary = failing_after(primary, opts["fail_at"])
    ml = load_movielens()
    rec = Recommender(
        two_tower=Failover("two-tower", primary, replica, timeout_s=2.0, cooldown_s=5.0),
        model=TwoTowerModel.load(opts["model"], device="cpu"),
        interactions=Interactions.from_frames(ml.users, ml.ratings),
    )
    return create_app(rec)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    os.environ["LOAD_TEST_SERVER"] = json.dumps(
        {
            "workdir": args.workdir,
            "model": str(args.model),
            "omp_threads": args.omp_threads,
            "fail_at": args.fail_at,
        }
    )
    uvicorn.run(
        "load_test:make_app",
        factory=True,
        app_dir=str(Path(__file__).parent),
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


# -- the client side -------------------------------------------------------------------------


async def _request(reader, writer, body: bytes) -> int:  # type: ignore[no-untyped-def]
    writer.write(
        b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _client(port: int, users: list[str], until: float, out: list, seed: int) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            body = json.dumps({"user_id": rng.choice(users), "k": 10}).encode()
            start = time.perf_counter()
            try:
                status = await _request(reader, writer, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                status = 0  # connection lost: counted as an error
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            out.append((time.perf_counter() - start, status))
    finally:
        writer.close()


def _fallbacks(port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("embedrec_store_fallbacks_total{")
    )


async def _load(port: int, users: list[str], clients: int, duration: float) -> tuple[list, list]:
    out: list[tuple[float, int]] = []
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    until = start + duration
    tasks = [asyncio.create_task(_client(port, users, until, out, seed)) for seed in range(clients)]
    while time.monotonic() < until:
        await asyncio.sleep(min(5.0, max(0.0, until - time.monotonic())))
        count = await asyncio.to_thread(_fallbacks, port)
        samples.append((round(time.monotonic() - start, 1), count))
    await asyncio.gather(*tasks)
    return out, samples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase(args: argparse.Namespace, users: list[str], fail_at: float | None) -> dict:
    import httpx

    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--workdir", args.workdir]
    cmd += ["--model", str(args.model), "--omp-threads", str(args.omp_threads)]
    cmd += ["--workers", str(args.workers)]
    if fail_at is not None:
        cmd += ["--fail-at", str(fail_at)]
    server = subprocess.Popen(cmd, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.3)
        asyncio.run(_load(port, users, 4, 2.0))  # warm-up, not measured
        results, samples = asyncio.run(_load(port, users, args.clients, args.duration))
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array([r[0] for r in results]) * 1000
    statuses: dict[int, int] = {}
    for _, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "phase": "healthy" if fail_at is None else f"primary failing from {fail_at:g} s",
        "requests": len(results),
        "rps": round(len(results) / args.duration, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "statuses": statuses,
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "5xx": sum(n for s, n in statuses.items() if s >= 500 or s == 0),
        "fallbacks_over_time": samples,
    }


def prepare(args: argparse.Namespace) -> list[str]:
    """The model (trained if absent) and the primary and replica stores; returns user ids."""
    from embedrec import open_store
    from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel
    from embedrec.ingestion.datasets import load_movielens

    ml = load_movielens()
    work = Path(args.workdir)
    if not Path(args.model).exists():
        args.model = work / "two_tower.pt"
        if not args.model.exists():
            print("training a small two-tower model (no --model given) ...", flush=True)
            config = TwoTowerConfig(
                dim=32, hidden=64, text=False, epochs=3, batch_size=2048, val_fraction=0.0
            )
            TwoTowerModel.fit(ml.ratings, ml.users, ml.items, config).save(args.model)
    model = TwoTowerModel.load(args.model, device="cpu")
    for name in ("primary", "replica"):
        if (work / name / "manifest.json").exists():
            continue
        vectors = model.item_vectors(ml.items)
        meta = [
            {"title": r.title, "genres": list(r.genres)}
            | ({} if pd.isna(r.year) else {"year": int(r.year)})
            for r in ml.items.itertuples()
        ]
        store = open_store(f"faiss:{work / name}?index=HNSW32", dim=vectors.shape[1])
        store.upsert(ml.items["item_id"].tolist(), vectors, meta)
        store.close()
    return ml.users["user_id"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--fail-at", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=ROOT / "data/demo/two_tower.pt")
    parser.add_argument("--workdir", default=str(ROOT / "bench-out/load-test"))
    parser.add_argument("--omp-threads", type=int, default=1, help="FAISS OpenMP threads")
    parser.add_argument("--workers", type=int, default=2, help="server processes (one per core)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if not (1 <= args.clients <= 256 and 1 <= args.duration <= 120):
        parser.error("--clients must be 1..256 and --duration 1..120 seconds")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    users = prepare(args)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the test")
    report = [phase(args, users, None), phase(args, users, args.duration / 3)]
    for row in report:
        print(json.dumps(row))
    print(f"load average {os.getloadavg()[0]:.1f} after the test")
    (Path(args.workdir) / "load_test.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
