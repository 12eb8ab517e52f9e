"""`embed_cached` as the ingest pipeline calls it, alone: CPU µs per row on the throughput
catalog's texts (benchmarks/ingest.py `throughput_catalog`), against a baseline checkout.

    .venv/bin/python benchmarks/embed_cached.py --baseline /tmp/main-base --rounds 5

Batches of `--batch` go through `embed_cached(..., unwritten=(unwritten, caching))`, and every
`--bulk` new vectors the buffer is put in the cache and becomes `caching` (as
pipeline/run.py's `hand_off`, here on the same thread: the put's CPU is counted). Three phases
in a fresh cache: `first` (every row new), `again` (a new run over the cache that holds
them all) and `repeats` (a fresh cache, each block of `--bulk // 4` rows given twice: the
second from the write-behind buffers). The CPU of each run's `put_buffer` calls is shown
apart (the pipeline puts on a thread of its own; SQLite writes without the GIL). A round
runs them `--repeat` times in one process
and keeps the least CPU time of each (on a shared machine, the least disturbed).
`--baseline DIR`: a checkout (e.g. `git archive main | tar -x -C DIR`) run the same way
with PYTHONPATH=DIR, in turns with this one in fresh processes; medians of `--rounds` are
printed with their ratio, the load average and a checksum of the vectors (the same on
both sides).

`--baseline` main at 43b5133, `--rounds 5 --repeat 3`, load average 2.7-2.9 (other work
running): first 4.25 against 6.44 CPU µs per row (0.660; of which `put_buffer` 0.58-0.70
against 0.64-0.73), again 2.90 against 3.42 (0.848), repeats 3.00 against 4.48 (0.668).
What is left of a first run is mostly the sha256 per text (~0.5 µs) and the hash embedder
(~1.5: a bytes object and a CRC-32 call per word); the rest (lookups, buffering, finding
duplicates) was ~0.9 µs against main's ~2.8 (one run of each, stages timed alone, load 3.9).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PHASES = ("first", "again", "repeats")


def child(args: argparse.Namespace) -> None:
    """One round of this checkout's (or PYTHONPATH's) `embed_cached`: a JSON line."""
    import numpy as np

    import embedrec
    from embedrec.embedders import EmbeddingCache, embed_cached, get_embedder
    from embedrec.embedders.keyed import VectorBuffer

    texts = json.loads(Path(args.texts).read_text())
    embedder = get_embedder(args.spec)

    def replay(cache: EmbeddingCache, items: list[str]) -> tuple[float, float]:
        """(a checksum of the vectors, CPU seconds in `put_buffer`)."""
        unwritten, caching, total, puts = VectorBuffer(), VectorBuffer(), 0.0, 0.0
        for i in range(0, len(items), args.batch):
            batch = items[i : i + args.batch]
            vectors, _ = embed_cached(embedder, batch, cache, unwritten=(unwritten, caching))
            total += float(vectors.sum(dtype=np.float64))
            if len(unwritten) >= args.bulk or i + args.batch >= len(items):
                start = time.process_time()
                cache.put_buffer(unwritten)
                puts += time.process_time() - start
                caching, unwritten = unwritten, VectorBuffer()
        return total, puts

    block = args.bulk // 4
    repeated = [t for i in range(0, len(texts), block) for t in texts[i : i + block] * 2]
    out: dict[str, object] = {"code": str(Path(embedrec.__file__).parent)}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="embed-cached-") as tmp:
            for phase, root, items in (
                ("first", "a", texts),
                ("again", "a", texts),
                ("repeats", "b", repeated),
            ):
                with EmbeddingCache(Path(tmp) / root) as cache:
                    start = time.process_time()
                    total, puts = replay(cache, items)
                    cpu = (time.process_time() - start) / len(items) * 1e6
                    if cpu < out.get(phase, cpu + 1):  # type: ignore[operator]
                        out[phase], out[f"{phase} puts"] = cpu, puts / len(items) * 1e6
                    out[f"{phase} sum"] = round(total, 3)
    print(json.dumps(out))


def texts_file(n: int, work: Path) -> Path:
    """The throughput catalog's texts, as the pipeline renders them, in a JSON file."""
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import _rows, throughput_catalog

    texts = [str(row.payload) for row in _rows(throughput_catalog(n, work))]
    path = work / "texts.json"
    path.write_text(json.dumps(texts))
    return path


def run_round(args: argparse.Namespace, texts: Path, path: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path
    command = [sys.executable, __file__, "--child", "--texts", str(texts)]
    command += ["--spec", args.spec, "--batch", str(args.batch), "--bulk", str(args.bulk)]
    command += ["--repeat", str(args.repeat)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--spec", default="hash:64")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--bulk", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs per round (the least)")
    parser.add_argument("--baseline", help="a checkout to compare with (PYTHONPATH)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sides: dict[str, Callable[[Path], dict[str, float]]] = {
        "this": lambda texts: run_round(args, texts, None)
    }
    if args.baseline:
        sides["baseline"] = lambda texts: run_round(args, texts, args.baseline)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="embed-cached-texts-") as tmp:
        texts = texts_file(args.n, Path(tmp))
        rounds: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in list(sides)[:: 1 if r % 2 else -1]:  # in turns, either first
                rounds[side].append(sides[side](texts))
                load.append(os.getloadavg()[0])
    report(args, rounds, load)


def report(args: argparse.Namespace, rounds: dict[str, list[dict]], load: list[float]) -> None:
    print(
        f"embed_cached: {args.n:,} texts, {args.spec}, batches of {args.batch}, puts of "
        f"{args.bulk:,}; {args.rounds} rounds (medians of each round's least CPU µs per row "
        f"in {args.repeat} runs); load average "
        f"{min(load):.1f}-{max(load):.1f}"
    )
    med = {s: {p: statistics.median(r[p] for r in rs) for p in PHASES} for s, rs in rounds.items()}
    for side, runs in rounds.items():
        print(f"  {side:<9} {runs[0]['code']}")
    print(f"  {'phase':<9}" + "".join(f"{side:>10}" for side in med) + "   ratio")
    for phase in PHASES:
        row = "".join(f"{med[side][phase]:10.2f}" for side in med)
        ratio = f"{med['this'][phase] / med['baseline'][phase]:8.3f}" if "baseline" in med else ""
        sums = {r[f"{phase} sum"] for rs in rounds.values() for r in rs}
        print(f"  {phase:<9}{row}{ratio}   (checksums: {', '.join(map(str, sorted(sums)))})")
        for side, runs in rounds.items():
            runs_ = " ".join(f"{r[phase]:.2f} ({r[f'{phase} puts']:.2f} puts)" for r in runs)
            print(f"      {side}: {runs_}")


if __name__ == "__main__":
    main()
