"""Pinecone upsert batching against the loopback server: the store's size-aware batching vs
a naive loop of fixed 1,000-vector `Index.upsert` calls with the SDK.

At 384 dimensions 1,000 vectors are ~8 MB of JSON in the SDK's float64 form, four times
Pinecone's 2 MB request limit, so every naive request is refused (400, as Pinecone does).

    .venv/bin/python benchmarks/pinecone_batching.py --n 100000 --dim 384
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
from pinecone import Pinecone
from pinecone.errors.exceptions import ApiError

from embedrec.stores import open_store
from embedrec.testing.pinecone_loopback import LoopbackPinecone

CHUNK = 10_000
"""Rows handed to the store per `upsert` call, as the ingestion pipeline would."""


def report(label: str, server: LoopbackPinecone, seconds: float, n: int) -> None:
    ups = server.requests("/vectors/upsert")
    sizes = [r.body_bytes for r in ups]
    ok = sum(r.status == 200 for r in ups)
    other = len(server.log) - len(ups)
    print(
        f"{label:<22} upsert requests {len(ups):>5} ({ok} accepted, {len(ups) - ok} refused)  "
        f"bytes/request mean {statistics.mean(sizes) / 1e6:5.2f} MB "
        f"max {max(sizes) / 1e6:5.2f} MB  "
        f"other requests {other:>4}  limit violations {len(server.violations):>4}  "
        f"wall {seconds:6.1f} s  ({n / seconds:,.0f} vectors/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{i}" for i in range(args.n)]
    meta = [{"genre": ["Drama", "Comedy"][i % 2], "year": 1990 + i % 30} for i in range(args.n)]

    server = LoopbackPinecone()
    os.environ.update(PINECONE_API_KEY="loopback", PINECONE_CONTROLLER_HOST=server.url)
    os.environ.pop("PINECONE_HOST", None)
    print(f"{args.n:,} x {args.dim} float32 vectors with 2 metadata keys; loopback at {server.url}")

    store = open_store("pinecone://bench-ours?create=1", dim=args.dim, metric="cosine")
    server.reset_log()
    started = time.perf_counter()
    for start in range(0, args.n, CHUNK):
        end = start + CHUNK
        store.upsert(ids[start:end], vectors[start:end], meta[start:end])
    store.flush()
    report("embedrec batching", server, time.perf_counter() - started, args.n)
    assert store.count() == args.n
    store.close()

    server.create_index("bench-naive", args.dim, "cosine")
    index = Pinecone(api_key="loopback").index(host=server.data_host("bench-naive"))
    server.reset_log()
    server.violations.clear()
    started = time.perf_counter()
    for start in range(0, args.n, 1000):
        batch = [
            {"id": ids[i], "values": vectors[i].tolist(), "metadata": meta[i]}
            for i in range(start, min(start + 1000, args.n))
        ]
        with contextlib.suppress(ApiError):  # refused: over 2 MB
            index.upsert(vectors=batch)
    report("naive 1000/request", server, time.perf_counter() - started, args.n)
    server.close()


if __name__ == "__main__":
    main()
