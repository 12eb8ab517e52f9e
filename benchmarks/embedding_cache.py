"""The embedding cache alone: µs per vector to write, to look up held keys and to look up
missing ones, for the segment format (embedders/cache.py) against the one-row-per-vector
SQLite table it replaced (reproduced here as it was: same pragmas, same statements).

    .venv/bin/python benchmarks/embedding_cache.py                  # 100k x 64-d, 3 rounds
    .venv/bin/python benchmarks/embedding_cache.py --n 300000 --dim 384

Writes go in bulks of `--bulk` (the pipeline's CACHE_BULK), lookups in batches of `--batch`
(the pipeline's batch size); each round writes a fresh cache of both kinds, interleaved, and
the medians of CPU time (the process's: the fairer figure on a shared machine) are printed
with their ratio and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedrec.embedders.cache import EmbeddingCache
from embedrec.embedders.keyed import KEY, hex_of, prefixes


class RowTable:
    """The format before segments: one SQLite row per vector, keyed by its hex digest."""

    def __init__(self, root: Path) -> None:
        self.db = sqlite3.connect(root / "rows.sqlite3", isolation_level=None)
        for pragma in ("page_size=16384", "journal_mode=WAL", "synchronous=NORMAL"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("PRAGMA cache_size=-32768")
        self.db.execute("PRAGMA wal_autocheckpoint=8192")
        self.db.execute("CREATE TABLE vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")

    def put(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        rows = sorted(zip(hex_of(digests), (v.tobytes() for v in vectors), strict=True))
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def find(self, digests: np.ndarray, dim: int) -> int:
        keys, found = hex_of(digests), {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk)
            found |= {k: np.frombuffer(v, dtype="<f4") for k, v in rows}
        return len(found)


def digests(n: int, salt: str) -> np.ndarray:
    raw = b"".join(hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n))
    return np.frombuffer(raw, dtype=KEY)


def cpu(work: Callable[[], None]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def one_round(root: Path, args: argparse.Namespace) -> dict[str, float]:
    held, missing = digests(args.n, "held"), digests(args.n, "missing")
    vectors = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    bulks = range(0, args.n, args.bulk)
    batches = range(0, args.n, args.batch)
    out: dict[str, float] = {}
    rows = RowTable(root)
    out["rows put"] = cpu(
        lambda: [rows.put(held[i : i + args.bulk], vectors[i : i + args.bulk]) for i in bulks]
    )
    out["rows hit"] = cpu(lambda: [rows.find(held[i : i + args.batch], args.dim) for i in batches])
    out["rows miss"] = cpu(
        lambda: [rows.find(missing[i : i + args.batch], args.dim) for i in batches]
    )
    rows.db.close()
    with EmbeddingCache(root / "segments") as cache:

        def find(keys: np.ndarray) -> None:
            for i in batches:
                part = keys[i : i + args.batch]
                cache.find(part, prefixes(part), args.dim)

        out["segments put"] = cpu(
            lambda: [cache.put(held[i : i + args.bulk], vectors[i : i + args.bulk]) for i in bulks]
        )
        out["segments hit"] = cpu(lambda: find(held))
        out["segments miss"] = cpu(lambda: find(missing))
        assert len(cache.find(held, prefixes(held), args.dim)[0]) == args.n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--bulk", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="embedrec-cache-bench-") as tmp:
            rounds.append(one_round(Path(tmp), args))
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(
        f"embedding cache: {args.n:,} x {args.dim}-d, bulks of {args.bulk:,}, lookups of "
        f"{args.batch}, {args.rounds} rounds (medians), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'CPU µs per vector':<20} {'SQLite rows':>12} {'segments':>10} {'ratio':>7}")
    for what in ("put", "hit", "miss"):
        old, new = med[f"rows {what}"], med[f"segments {what}"]
        print(
            f"  {what:<20} {old / args.n * 1e6:12.2f} {new / args.n * 1e6:10.2f} {new / old:7.3f}"
        )


if __name__ == "__main__":
    main()
