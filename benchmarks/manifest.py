"""The ingest manifest alone: CPU µs per entry to commit, and to look every entry up again,
in the pipeline's pattern, for this checkout's `IngestManifest` against another's (main's,
run by its own interpreter).

    .venv/bin/python benchmarks/manifest.py --baseline /work/main/.venv/bin/python
    .venv/bin/python benchmarks/manifest.py --rows 1000000 --commits 40 --rounds 1 ...
    .venv/bin/python benchmarks/manifest.py --pipeline --rounds 3 --baseline ...

A first ingest commits `--rows` (id, sha256 hex) pairs in `--commits` checkpoints (each
its own call, as `_Run._checkpoint` makes them). An unchanged re-ingest opens the manifest
again, asks its count (`open_existing`), then looks every id up in chunks of the batch
size (`_changed`): once with chunks of 256 and once of 4096, each in a fresh process from a
fresh open (the load of the entries counts). Each round runs both checkouts in turn, each
part in a process of its own; the medians of process CPU time are printed with their ratio
and the load average. `--pipeline` times the two calls inside real ingests instead (see
`pipeline`): there, main's one SQLite step per entry hands the GIL to the other threads and
waits to take it back, each time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTS = ("commit", "lookup 256", "lookup 4096")


def entries(rows: int) -> list[tuple[str, str]]:
    """Ids as the throughput catalog numbers them, with hashes like `content_hashes`'."""
    return [(str(i), hashlib.sha256(b"%d" % i).hexdigest()) for i in range(rows)]


def commit(path: Path, rows: int, commits: int) -> float:
    from embedrec.ingestion.manifest import IngestManifest

    pairs = entries(rows)
    info = {"catalog": "/tmp/catalog.csv", "store": "faiss:/tmp/store"}
    step = -(-rows // commits)
    cpu = time.process_time()
    book = IngestManifest(path)
    book.count()
    for start in range(0, rows, step):
        book.commit(pairs[start : start + step], info)
    book.close()
    return time.process_time() - cpu


def lookup(path: Path, rows: int, chunk: int) -> float:
    from embedrec.ingestion.manifest import IngestManifest

    ids = [i for i, _ in entries(rows)]
    found = 0
    cpu = time.process_time()
    book = IngestManifest(path)
    if book.count() != rows:
        raise SystemExit(f"{path} holds {book.count()} entries, not {rows}")
    for start in range(0, rows, chunk):
        found += len(book.hashes(ids[start : start + chunk]))
    book.close()
    elapsed = time.process_time() - cpu
    if found != rows:
        raise SystemExit(f"found {found} of {rows}")
    return elapsed


def pipeline(rows: int) -> dict[str, float]:
    """µs per row of `IngestManifest.commit`, `.count` (which reads a manifest's entries
    in) and `.hashes`, CPU of the threads calling them and wall, in a first ingest of
    benchmarks/ingest.py's throughput catalog then an unchanged re-ingest (hash:64, Flat,
    batches of 256): beside the pipeline's other threads, which contend for the GIL
    whenever SQLite releases it."""
    sys.path.insert(0, "benchmarks")  # the checkout's own (cwd)
    import ingest as bench

    from embedrec.ingestion import manifest
    from embedrec.ingestion.pipeline import ingest
    from embedrec.ingestion.summary import IngestOptions

    spent: dict[str, float] = {}
    for name in ("commit", "count", "hashes"):
        setattr(manifest.IngestManifest, name, _timed(manifest.IngestManifest, name, spent))
    with tempfile.TemporaryDirectory(prefix="manifest-bench-") as tmp:
        work = Path(tmp)
        os.environ["EMBEDREC_CACHE"] = str(work / "cache")
        source = bench.throughput_catalog(rows, work)
        for _ in range(2):
            options = IngestOptions(batch_size=256)
            ingest(source, f"faiss:{work / 'store'}?index=Flat", "hash:64", options)
    return {f"pipeline {key}": seconds / rows * 1e6 for key, seconds in spent.items()}


def _timed(cls: type, name: str, spent: dict[str, float]) -> Callable[..., Any]:
    """`cls.name`, adding its thread's CPU time and wall time to `spent`."""
    method = getattr(cls, name)

    def timed(self: Any, *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(self, *args)
        finally:
            for key, took in (("thread CPU", time.thread_time() - cpu),
                              ("wall", time.perf_counter() - wall)):  # fmt: skip
                spent[f"{name} {key}"] = spent.get(f"{name} {key}", 0.0) + took

    return timed


def child(part: str, path: Path, rows: int, commits: int) -> None:
    if part == "pipeline":
        got = pipeline(rows)
    elif part == "commit":
        got = {part: commit(path, rows, commits) / rows * 1e6}
    else:
        got = {part: lookup(path, rows, int(part.split()[1])) / rows * 1e6}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(got | {"peak MiB": peak}))


def measure(
    python: str, cwd: Path, part: str, path: Path, rows: int, commits: int
) -> dict[str, float]:
    """`part`'s figures (µs per row; the process's peak MiB), run by `python` in `cwd`
    (whose embedrec it imports)."""
    args = [python, str(Path(__file__).resolve()), "--child", part, "--path", str(path)]
    args += ["--rows", str(rows), "--commits", str(commits)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pipeline", action="store_true", help="time them inside ingests")
    parser.add_argument("--baseline", help="the interpreter of the checkout to compare with")
    parser.add_argument("--baseline-dir", default="/work/main", help="where it runs")
    parser.add_argument("--child", choices=(*PARTS, "pipeline"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.rows, args.commits)
        return
    here = Path(__file__).resolve().parents[1]
    runs = {"this": (sys.executable, here)}
    if args.baseline:
        runs["baseline"] = (args.baseline, Path(args.baseline_dir))
    parts = ("pipeline",) if args.pipeline else PARTS
    figures: dict[tuple[str, str], list[float]] = {}
    print(f"{args.rows} rows, {args.commits} commits; load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="manifest-bench-") as tmp:
        for r in range(args.rounds):
            for name, (python, cwd) in runs.items():
                path = Path(tmp) / f"{name}-{r}.sqlite"
                for part in parts:
                    got = measure(python, cwd, part, path, args.rows, args.commits)
                    for key, value in got.items():
                        figures.setdefault((name, key), []).append(value)
    for key in dict.fromkeys(key for _, key in figures):
        mine = statistics.median(figures["this", key])
        line = f"{key:30s} this {mine:7.2f}"
        if args.baseline:
            base = statistics.median(figures["baseline", key])
            line += f"   baseline {base:7.2f}   ratio {base / mine:5.1f}x"
        print(line)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
