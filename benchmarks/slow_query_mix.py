"""A slow-query mix against ONE server worker: does a slow search block the fast ones?

    python benchmarks/slow_query_mix.py [--clients 16] [--duration 12] [--rounds 2]
                                        [--big 300000] [--slow-every 0.25]

The load test's server (`load_test.py`: MovieLens two-tower vectors in FAISS HNSW32, its model
and users) plus a text space over a large exact store (`--big` random 128-d vectors in a FAISS
`Flat` index, a `g` field of 0..9 on each). Fast requests: `/recommend` for a user from
`--clients` closed-loop clients. Slow ones: `/similar` in the text space with the filter
`{"g": {"$in": [0, ..., 6]}}` (exact scoring of 70% of the store), one every `--slow-every`
seconds. Each phase starts a fresh one-worker server under one policy for in-process stores:

- inline: every search on the event loop (what `_answerer` did before);
- thread: every search in the thread pool (`run_in_threadpool`), as for a remote store;
- filtered: the service's policy (`routes.offloaded`): the thread pool for filtered calls;

each with the slow trickle ("mix") and without it ("fast"), the policies' order rotating
between rounds. Reports the fast requests' requests/s, p50 and p99, the slow ones' median and
worst latency and the server's CPU per fast request, and per round each policy's ratio to
inline: the machine is shared, read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import load_test  # the load test's server, client and stores

POLICIES = ("inline", "thread", "filtered")
DIM = 128
METRICS = ("fast_", "slow_p", "serve")
SLOW_FILTER = {"g": {"$in": [0, 1, 2, 3, 4, 5, 6]}}


def make_app():  # type: ignore[no-untyped-def]
    """One worker's app: the load test's, plus the text space over the big exact store;
    under the "thread" policy every space counts as remote, so `_answerer` offloads it."""
    from embedrec import open_store
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders import get_embedder
    from embedrec.embedders.two_tower import TwoTowerModel
    from embedrec.retrieval.api import create_app, routes
    from embedrec.retrieval.client import Failover, Recommender
    from embedrec.retrieval.users import Interactions

    opts = json.loads(os.environ["LOAD_TEST_SERVER"])
    work = Path(opts["workdir"])
    ml = load_movielens()
    rec = Recommender(
        two_tower=Failover("two-tower", open_store(f"faiss:{work / 'primary'}")),
        model=TwoTowerModel.load(opts["model"], device="cpu"),
        interactions=Interactions.from_frames(ml.users, ml.ratings),
        text=Failover("text", open_store(f"faiss:{work / 'big'}")),
        text_embedder=get_embedder(f"hash:{DIM}"),
    )
    if opts["policy"] != "filtered":  # the alternatives to the service's own policy
        everything = opts["policy"] == "thread"
        routes.offloaded = lambda recommender, space, filter: everything
    return load_test.answering_pid(create_app(rec))


def serve(args: argparse.Namespace) -> None:
    import faiss
    import uvicorn

    faiss.omp_set_num_threads(1)
    opts = {"workdir": args.workdir, "model": str(args.model), "policy": args.policy}
    os.environ["LOAD_TEST_SERVER"] = json.dumps(opts)
    uvicorn.run(
        "slow_query_mix:make_app",
        factory=True,
        app_dir=str(Path(__file__).parent),
        workers=1,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


def build_big(work: Path, n: int) -> None:
    from embedrec import open_store

    if (work / "big" / "manifest.json").exists():
        return
    print(f"building the {n:,}-vector Flat store ...", flush=True)
    rng = np.random.default_rng(0)
    store = open_store(f"faiss:{work / 'big'}?index=Flat", dim=DIM)
    for start in range(0, n, 50_000):
        ids = range(start, min(n, start + 50_000))
        vectors = rng.standard_normal((len(ids), DIM), dtype=np.float32)
        store.upsert([f"b{i}" for i in ids], vectors, [{"g": i % 10} for i in ids])
    store.close()


async def _slow(port: int, n: int, until: float, every: float, out: list) -> None:
    """One slow request every `every` seconds, each on a connection of its own."""
    i = 0
    while time.monotonic() < until:
        body = json.dumps(
            {"item_id": f"b{(i * 7919) % n}", "k": 10, "space": "text"} | {"filter": SLOW_FILTER}
        ).encode()
        head = b"POST /similar HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            head + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        answer = await reader.read()
        writer.close()
        out.append((time.perf_counter() - start, int(answer.split(b" ", 2)[1])))
        i += 1
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - start)))


async def _mix(port: int, bodies: list[str], args: argparse.Namespace, slow: bool):
    fast: list = []
    slow_out: list = []
    until = time.monotonic() + args.duration
    tasks = [load_test._client(port, bodies, until, fast, seed) for seed in range(args.clients)]
    if slow:
        tasks.append(_slow(port, args.big, until, args.slow_every, slow_out))
    await asyncio.gather(*tasks)
    return fast, slow_out


def phase(args: argparse.Namespace, bodies: list[str], policy: str, slow: bool) -> dict:
    import uvloop

    port = load_test._free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--policy", policy]
    cmd += ["--workdir", args.workdir, "--model", str(args.model)]
    with load_test.running_server(cmd, port, 1) as server:
        cpu = load_test._server_cpu(server)
        warm = argparse.Namespace(**{**vars(args), "clients": 2, "duration": 2.0})
        uvloop.run(_mix(port, bodies, warm, slow=True))  # warm-up, not measured
        before = cpu()
        fast, slow_out = uvloop.run(_mix(port, bodies, args, slow))
        used = cpu() - before
    lat = np.array([r[0] for r in fast]) * 1000
    row = {
        "policy": policy,
        "load": "mix" if slow else "fast",
        "fast_rps": round(len(fast) / args.duration, 1),
        "fast_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "fast_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "server_cpu_us_per_fast": round(used / max(len(fast), 1) * 1e6),
        "errors": sum(1 for r in fast if r[1] != 200) + sum(1 for r in slow_out if r[1] != 200),
    }
    if slow_out:
        slow_ms = np.array([r[0] for r in slow_out]) * 1000
        row |= {
            "slow_n": len(slow_out),
            "slow_p50_ms": round(float(np.median(slow_ms)), 1),
            "slow_max_ms": round(float(slow_ms.max()), 1),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--big", type=int, default=400_000, help="vectors in the exact store")
    parser.add_argument("--slow-every", type=float, default=0.25, help="seconds between slow")
    parser.add_argument("--workdir", default=load_test.WORKDIR)
    parser.add_argument("--model", type=Path, default=load_test.MODEL)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, default="inline", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    setup = argparse.Namespace(workdir=args.workdir, model=args.model, history=0)
    bodies = load_test.prepare(setup)  # trains a small model where --model is absent
    args.model = setup.model
    build_big(work, args.big)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for r in range(args.rounds):
        order = POLICIES[r % 3 :] + POLICIES[: r % 3]
        for slow in (True, False):
            got = {p: phase(args, bodies, p, slow) | {"round": r} for p in order}
            for p in POLICIES:
                print(json.dumps(got[p]), flush=True)
            rows += got.values()
            base = got["inline"]
            for p in POLICIES[1:]:
                ratio = {k: round(got[p][k] / base[k], 3) for k in base if k.startswith(METRICS)}
                print(json.dumps({"round": r, "load": base["load"], f"{p}/inline": ratio}))
    print(f"load average {os.getloadavg()[0]:.1f} after")
    (work / "slow_query_mix.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
