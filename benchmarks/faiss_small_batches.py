"""A FAISS store's CPU cost per record for ingest's small upserts, against another checkout's.

    .venv/bin/python benchmarks/faiss_small_batches.py [--records 100000] [--batches 256,4096]
        [--repeat 5] [--best-of 3] [--against /path/to/other/.venv/bin/python]

Each side, in a fresh process, upserts `--records` records (ids "0", "1", ...; 64-d vectors;
a distinct title str, a year int and a list of two genre str, as `benchmarks/ingest.py
--throughput` writes them) into a fresh Flat store on disk, a batch at a time as ingest does
(`check_records`, then `upsert_checked`), then flushes it; it prints the CPU microseconds per
record of the upserts and of the flush, per batch size, the least of `--best-of` stores.
`--against` runs this same script with another interpreter (whose environment imports
another checkout's embedrec, e.g. `/work/main/.venv/bin/python`; each side runs from /tmp),
the two sides in turns, order alternating, and prints the medians over `--repeat` rounds
with the median of the per-round ratios, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 64
GENRES = ("Comedy", "Drama", "Action", "Horror", "Sci-Fi", "Romance")


def records(n: int) -> tuple[list[str], np.ndarray, list[dict]]:
    ids = [str(i) for i in range(n)]
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    metadata = [
        {"title": f"Movie {i}", "year": 1950 + i % 70, "genres": [GENRES[i % 6], GENRES[i % 5]]}
        for i in range(n)
    ]
    return ids, vectors, metadata


def side(n: int, batches: list[int], best_of: int) -> dict[str, dict[str, float]]:
    """CPU us per record of the upserts and of the flush, per batch size: the least of
    `best_of` fresh stores (a shared machine's load only ever adds)."""
    from embedrec import open_store

    ids, vectors, metadata = records(n)
    with tempfile.TemporaryDirectory() as folder:  # untimed: what loads on first use
        warm = open_store(f"faiss:{folder}/store?index=Flat", dim=DIM, metric="cosine")
        warm.upsert_checked(warm.check_records(["w"], vectors[:1], metadata[:1])[0])
        warm.close()
    out = {}
    for batch in batches:
        costs = [one_store(open_store, ids, vectors, metadata, batch) for _ in range(best_of)]
        out[str(batch)] = {
            "upsert_us": min(c[0] for c in costs),
            "flush_us": min(c[1] for c in costs),
        }
    return out


def one_store(open_store, ids, vectors, metadata, batch: int) -> tuple[float, float]:
    """CPU us per record of upserting the records into a fresh store, and of its flush."""
    n = len(ids)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"faiss:{folder}/store?index=Flat", dim=DIM, metric="cosine")
        start = time.process_time()
        for at in range(0, n, batch):
            part = slice(at, at + batch)
            checked, _ = store.check_records(ids[part], vectors[part], metadata[part])
            store.upsert_checked(checked)
        upserts = time.process_time() - start
        store.flush()
        flush = time.process_time() - start - upserts
        store.close()
    return upserts / n * 1e6, flush / n * 1e6


def run_side(python: str, n: int, batches: list[int], best_of: int) -> dict[str, dict[str, float]]:
    """One side in a fresh process, run from /tmp so that the interpreter's own checkout is
    the one imported."""
    args = [python, str(Path(__file__).resolve()), "--side", "--records", str(n)]
    args += ["--batches", ",".join(map(str, batches)), "--best-of", str(best_of)]
    done = subprocess.run(args, capture_output=True, text=True, check=True, cwd="/tmp")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(python: str, n: int, batches: list[int], repeat: int, best_of: int) -> None:
    rounds: list[dict[str, dict]] = []
    for r in range(repeat):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        pythons = {"ours": sys.executable, "theirs": python}
        got = {s: run_side(pythons[s], n, batches, best_of) for s in order}
        rounds.append(got)
    print(f"{n:,} records, median of {repeat} rounds (CPU us/record); theirs: {python}")
    for batch in map(str, batches):
        for key in ("upsert_us", "flush_us"):
            ours = [r["ours"][batch][key] for r in rounds]
            theirs = [r["theirs"][batch][key] for r in rounds]
            ratio = float(np.median(np.divide(ours, theirs)))
            print(
                f"  batch {batch:>5} {key[:-3]:>6}: ours {np.median(ours):5.2f}  theirs "
                f"{np.median(theirs):5.2f}  ours/theirs {ratio:.2f}"
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batches", default="256,4096", help="batch sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--best-of", type=int, default=3, help="fresh stores per side and round")
    parser.add_argument("--against", help="the other side's Python interpreter")
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.side:
        print(json.dumps(side(args.records, batches, args.best_of)))
    elif args.against:
        compare(args.against, args.records, batches, args.repeat, args.best_of)
    else:
        for batch, cost in side(args.records, batches, args.best_of).items():
            print(f"batch {batch}: upsert {cost['upsert_us']:.2f}, flush {cost['flush_us']:.2f}")


if __name__ == "__main__":
    main()
