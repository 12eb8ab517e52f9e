"""The ingest manifest alone: CPU µs per entry to commit, and to look every entry up again,
in the pipeline's pattern, for this checkout's `IngestManifest` against another's (main's,
run by its own interpreter).

    .venv/bin/python benchmarks/manifest.py --baseline /work/main/.venv/bin/python
    .venv/bin/python benchmarks/manifest.py --rows 1000000 --commits 40 --rounds 1 ...

A first ingest commits `--rows` (id, sha256 hex) pairs in `--commits` checkpoints (each
its own call, as `_Run._checkpoint` makes them). An unchanged re-ingest opens the manifest
again, asks its count (`open_existing`), then looks every id up in chunks of the batch
size (`_changed`): once with chunks of 256 and once of 4096, each in a fresh process from a
fresh open (the load of the entries counts). Each round runs both checkouts in turn, each
part in a process of its own; the medians of process CPU time are printed with their ratio
and the load average.
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
from pathlib import Path

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


def child(part: str, path: Path, rows: int, commits: int) -> None:
    if part == "commit":
        seconds = commit(path, rows, commits)
    else:
        seconds = lookup(path, rows, int(part.split()[1]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"us_per_row": seconds / rows * 1e6, "peak_mib": peak}))


def measure(
    python: str, cwd: Path, part: str, path: Path, rows: int, commits: int
) -> tuple[float, float]:
    """(µs of CPU per row, peak MiB of the process) for `part`, run by `python` in `cwd`
    (whose embedrec it imports)."""
    args = [python, str(Path(__file__).resolve()), "--child", part, "--path", str(path)]
    args += ["--rows", str(rows), "--commits", str(commits)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["us_per_row"], got["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="the interpreter of the checkout to compare with")
    parser.add_argument("--baseline-dir", default="/work/main", help="where it runs")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.rows, args.commits)
        return
    here = Path(__file__).resolve().parents[1]
    runs = {"this": (sys.executable, here)}
    if args.baseline:
        runs["baseline"] = (args.baseline, Path(args.baseline_dir))
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"{args.rows} rows, {args.commits} commits; load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="manifest-bench-") as tmp:
        for r in range(args.rounds):
            for name, (python, cwd) in runs.items():
                path = Path(tmp) / f"{name}-{r}.sqlite"
                for part in PARTS:
                    got = measure(python, cwd, part, path, args.rows, args.commits)
                    times.setdefault((name, part), []).append(got)
    for part in PARTS:
        mine, peak = (statistics.median(x) for x in zip(*times["this", part], strict=True))
        line = f"{part:12s} this {mine:6.2f} CPU us/row ({peak:5.0f} MiB peak)"
        if args.baseline:
            base, peak = (statistics.median(x) for x in zip(*times["baseline", part], strict=True))
            line += f"   baseline {base:6.2f} ({peak:5.0f} MiB)   ratio {base / mine:5.1f}x"
        print(line)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
