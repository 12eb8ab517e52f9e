"""Freshness of live events (docs/realtime.md), against a real redis-server on loopback.

    nice -n 10 python benchmarks/freshness.py [--clients 32] [--rate 500] [--duration 20]
                                              [--kills 5] [--workdir /tmp/embedrec-fresh]

MovieLens-100k: the 1,682 items as two-tower item vectors in FAISS (a small model trained
first, one epoch), 300 of them as MiniLM text vectors, the 943 users. Four parts:

1. apply rate: 50,000 interaction events XADDed, then drained by one in-process consumer
   (Redis histories); events/s (target >= 5,000 on 2 cores);
2. interaction freshness: `embedrec serve --workers 2` (each worker a consumer of the group,
   histories in Redis), `--clients` closed-loop clients on /recommend, `--rate` events/s
   XADDed for random users; meanwhile probes: a user's top item is XADDed as their
   interaction, and /recommend polled (every 5 ms) until it leaves their results. p50/p99
   from XADD to that answer (target p99 <= 1 s);
3. catalogue freshness: `embedrec serve --workers 2` over FAISS (the worker whose consumer
   applies a catalogue event writes the store; the other loads that commit within
   `[stream] refresh_s`), a new item XADDed, /search polled on a new connection each time
   (so either worker answers) until it is found 4 times in a row, which all but certainly
   includes the worker that did not apply it; p50/p99 (target p99 <= 2 s);
4. kills: two `embedrec stream` consumers while `--rate` events/s arrive; `--kills` times one
   of them is killed with SIGKILL and another started; at the end every event is checked:
   lost (no effect) and applied twice (Redis's applied counter over the distinct events).

The machine is shared: absolute figures swing with other work; each part prints what it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import redis

from embedrec.testing.redis_server import RedisServer, free_port

N_TEXT = 300


def prepare(work: Path) -> Path:
    """Model, stores, user tables and a serve config under `work`; returns the config."""
    from embedrec import open_store
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders import EmbeddingCache, embed_cached, get_embedder
    from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower

    ml = load_movielens()
    work.mkdir(parents=True, exist_ok=True)
    model = work / "two_tower.pt"
    meta = [
        {"title": r.title, "genres": list(r.genres)}
        | ({} if pd.isna(r.year) else {"year": int(r.year)})
        for r in ml.items.itertuples()
    ]
    if not model.exists():
        print("training a small two-tower model (one epoch) ...", flush=True)
        config = TwoTowerConfig(dim=32, hidden=64, text=False, epochs=1, val_fraction=0.0)
        fit_two_tower(ml.ratings, ml.users, ml.items, config).save(model)
        trained = TwoTowerModel.load(model, device="cpu")
        store = open_store(f"faiss:{work / 'tt'}?index=Flat", dim=trained.config.dim)
        store.upsert(ml.items["item_id"].tolist(), trained.item_vectors(ml.items), meta)
        store.close()
        embedder = get_embedder("text", device="cpu")
        texts = [f"{m['title']}: {', '.join(m['genres'])}" for m in meta[:N_TEXT]]
        with EmbeddingCache() as cache:
            vectors = embed_cached(embedder, texts, cache)[0]
        store = open_store(f"faiss:{work / 'text'}?index=Flat", dim=vectors.shape[1])
        store.upsert(ml.items["item_id"].tolist()[:N_TEXT], vectors, meta[:N_TEXT])
        store.close()
        ml.users.to_csv(work / "users.csv", index=False)
        ml.ratings[["user_id", "item_id", "timestamp"]].to_csv(work / "ratings.csv", index=False)
    return model


def write_config(work: Path, model: Path, url: str, name: str, stream: str) -> Path:
    path = work / f"{name}.toml"
    path.write_text(
        f'[server]\nreload_interval_s = 0\ndrift_sample = 0\n\n'
        f'[text]\nuri = "faiss:{work / "text"}"\nembedder = "text"\n\n'
        f'[two_tower]\nuri = "faiss:{work / "tt"}"\nmodel = "{model}"\n\n'
        f'[users]\nusers = "{work / "users.csv"}"\nratings = "{work / "ratings.csv"}"\n\n'
        f'[stream]\nredis = "{url}"\nstream = "{stream}"\nprefix = "{stream}"\nblock_s = 0.2\n'
        f"claim_idle_s = 2.0\nbatch = 200\n"
    )  # fmt: skip
    return path


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    a = np.array(values)
    return (
        f"n={len(a)} p50 {np.percentile(a, 50) * 1000:.0f} ms, "
        f"p99 {np.percentile(a, 99) * 1000:.0f} ms, max {a.max() * 1000:.0f} ms"
    )


def events(users: list[str], items: list[str], n: int, tag: str) -> list[dict]:
    rng = random.Random(tag)
    now = time.time()
    return [
        {"event_id": f"{tag}-{i}", "user_id": rng.choice(users), "item_id": rng.choice(items),
         "timestamp": now}
        for i in range(n)
    ]  # fmt: skip


def xadd(client: redis.Redis, stream: str, batch: list[dict]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for event in batch:
            pipe.xadd(stream, {"event": orjson.dumps(event)})
        pipe.execute()


# -- 1. apply rate ------------------------------------------------------------------------


def apply_rate(config: Path, client: redis.Redis, users: list[str], items: list[str]) -> None:
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config
    from embedrec.retrieval.live.service import Live

    serve = load_serve_config(config)
    assert serve.stream is not None
    rec = Recommender.from_config(serve)
    live = Live(rec, serve.stream, consume=True, consumer="rate")
    assert live.consumer is not None
    live.consumer.ensure_group()
    n = 50_000
    for start in range(0, n, 5000):
        xadd(client, serve.stream.stream, events(users, items, 5000, f"rate{start}")[:5000])
    started = time.perf_counter()
    cpu = time.process_time()
    done = 0
    while done < n:
        done += live.consumer.step()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    print(f"1. apply rate: {n:,} events in {wall:.2f} s = {n / wall:,.0f} events/s "
          f"(consumer process CPU {cpu:.2f} s = {n / cpu:,.0f} events per CPU-second; "
          "target >= 5,000/s)", flush=True)  # fmt: skip
    live.close()
    rec.close()


# -- 2. and 3. freshness against a server ---------------------------------------------------


def start_server(config: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "embedrec.cli", "serve", str(config), "--port", str(port)]
    server = subprocess.Popen([*cmd, "--workers", str(workers)], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    # each worker loads torch and MiniLM: minutes when the machine is busy
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.5)
    stop(server)  # SIGINT: uvicorn stops its workers too (a kill would leave them running)
    raise SystemExit("the server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _load(base: str, users: list[str], clients: int, stop_at: float) -> list[int]:
    counts = [0, 0]  # answered, 5xx

    async def one(http: httpx.AsyncClient) -> None:
        rng = random.Random()
        while time.monotonic() < stop_at:
            answer = await http.post("/recommend", json={"user_id": rng.choice(users), "k": 10})
            counts[0] += 1
            counts[1] += answer.status_code >= 500

    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return counts


async def _produce(client: redis.Redis, stream: str, users, items, rate: int, stop_at: float):
    tick, n = 0.05, 0
    while time.monotonic() < stop_at:
        batch = events(users, items, int(rate * tick), f"bg{n}")
        n += 1
        await asyncio.to_thread(xadd, client, stream, batch)
        await asyncio.sleep(tick)


async def _probes(base: str, client: redis.Redis, stream: str, users: list[str], stop_at: float):
    out: list[float] = []
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.monotonic() < stop_at - 3:
            user = rng.choice(users)
            body = (await http.post("/recommend", json={"user_id": user})).json()
            top = body["results"][0]["id"]
            event = {"event_id": f"probe-{time.time()}", "user_id": user, "item_id": top,
                     "timestamp": time.time()}  # fmt: skip
            sent = time.perf_counter()
            await asyncio.to_thread(xadd, client, stream, [event])
            while True:
                body = (await http.post("/recommend", json={"user_id": user})).json()
                if top not in [h["id"] for h in body["results"]]:
                    out.append(time.perf_counter() - sent)
                    break
                if time.perf_counter() - sent > 10:
                    out.append(float("inf"))
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)
    return out


def interaction_freshness(args, config: Path, client: redis.Redis, users, items) -> None:
    server, base = start_server(config, workers=2)
    try:
        stop_at = time.monotonic() + args.duration
        stream = "fresh"

        async def run():  # type: ignore[no-untyped-def]
            return await asyncio.gather(
                _load(base, users, args.clients, stop_at),
                _produce(client, stream, users, items, args.rate, stop_at),
                _probes(base, client, stream, users, stop_at),
            )

        counts, _, probes = asyncio.run(run())
        print(f"2. interaction XADD -> /recommend reflects it (2 workers, {args.clients} "
              f"clients, {args.rate} events/s, {args.duration:.0f} s): {percentiles(probes)}; "
              f"{counts[0] / args.duration:,.0f} requests/s, {counts[1]} 5xx "
              "(target p99 <= 1 s)", flush=True)  # fmt: skip
    finally:
        stop(server)


FOUND_IN_A_ROW = 4
"""Searches in a row, each on a new connection, that must find a new item (part 3)."""


def catalogue_freshness(config: Path, client: redis.Redis, probes: int) -> None:
    server, base = start_server(config, workers=2)
    out: list[float] = []
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection, any worker
    try:
        with httpx.Client(base_url=base, timeout=30, limits=fresh) as http:
            for n in range(probes):
                word = f"zq{n}x{random.randrange(10**6)}"
                text = f"{word}: a documentary about quasars number {n}"
                item = f"new-{word}"
                fields = {"title": text, "year": 2026, "genres": ["Documentary"]}
                event = {"event_id": item, "op": "added", "item_id": item, "text": text}
                event["fields"] = fields
                sent = time.perf_counter()
                xadd(client, "catalogue", [event])
                streak, first = 0, 0.0
                while True:
                    found = http.post("/search", json={"text": text, "k": 3}).json()["results"]
                    hit = item in [h["id"] for h in found]
                    streak, first = (streak + 1, first or time.perf_counter()) if hit else (0, 0.0)
                    if streak == FOUND_IN_A_ROW:
                        out.append(first - sent)
                        break
                    if time.perf_counter() - sent > 10:
                        out.append(float("inf"))
                        break
                    time.sleep(0.01)
    finally:
        stop(server)
    print(f"3. catalogue event -> item found by /search (2 workers): {percentiles(out)} "
          "(target p99 <= 2 s)", flush=True)  # fmt: skip


# -- 4. kills under load ------------------------------------------------------------------


def _consumer(config: Path, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "embedrec.cli", "stream", str(config), "--consumer", name]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)


def kills(args, config: Path, client: redis.Redis, users, items) -> None:
    stream, sent = "kills", []
    consumers = [_consumer(config, f"c{i}") for i in range(2)]
    time.sleep(8)  # they load the model and stores
    rng = random.Random(3)
    started = time.monotonic()
    spawned = 2
    for kill in range(args.kills):
        until = started + (kill + 1) * args.duration / args.kills
        while time.monotonic() < until:
            batch = events(users, items, args.rate // 20, f"k{len(sent)}")
            xadd(client, stream, batch)
            sent += batch
            time.sleep(0.05)
        victim = rng.randrange(2)
        os.kill(consumers[victim].pid, signal.SIGKILL)
        consumers[victim].wait()
        consumers[victim] = _consumer(config, f"c{spawned}")
        spawned += 1
    deadline = time.monotonic() + 120
    group = "embedrec"
    while time.monotonic() < deadline:
        info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        if info["pending"] == 0 and info.get("lag") == 0:
            break
        time.sleep(0.5)
    for process in consumers:
        stop(process)
    distinct = {e["event_id"] for e in sent}
    applied = int(client.get(f"{stream}:applied") or 0)
    with client.pipeline(transaction=False) as pipe:
        for event_id in distinct:
            pipe.exists(f"{stream}:a:{event_id}")
        present = sum(pipe.execute())
    print(f"4. {args.kills} kills (SIGKILL) of one of 2 consumers under {args.rate} events/s: "
          f"{len(distinct):,} events, lost {len(distinct) - present}, applied twice "
          f"{max(0, applied - len(distinct))} (target 0 / 0)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=int, default=500, help="events per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of parts 2 and 4")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--catalogue-probes", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embedrec-fresh"))
    parser.add_argument("--parts", default="1234", help="which parts to run, e.g. 23")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()  # the configs name absolute paths
    model = prepare(args.workdir)
    from embedrec.data.movielens import load_movielens

    ml = load_movielens()
    users, items = ml.users["user_id"].tolist(), ml.items["item_id"].tolist()
    server = RedisServer(args.workdir / f"redis-{os.getpid()}").start()
    try:
        client = redis.Redis.from_url(server.url)
        configs = {
            name: write_config(args.workdir, model, server.url, name, name)
            for name in ("rate", "fresh", "catalogue", "kills")
        }
        print(json.dumps({"redis": server.url, "load_average": os.getloadavg()}), flush=True)
        if "1" in args.parts:
            apply_rate(configs["rate"], client, users, items)
        if "2" in args.parts:
            interaction_freshness(args, configs["fresh"], client, users, items)
        if "3" in args.parts:
            catalogue_freshness(configs["catalogue"], client, args.catalogue_probes)
        if "4" in args.parts:
            kills(args, configs["kills"], client, users, items)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
