"""`embedrec bench CONFIG.toml [--quick] [--out DIR]`: the store comparison benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="compare vector stores: recall, latency, QPS, build time, memory; report + plots",
        description="Run the store benchmark of CONFIG (TOML, see configs/bench.toml) and write "
        "DIR/results.json, results.csv, report.md and PNG plots. Finished measurements are kept "
        "in DIR/results.jsonl, so a rerun resumes where the last one stopped.",
    )
    bench.add_argument("config", type=Path, metavar="CONFIG")
    bench.add_argument(
        "--quick", action="store_true", help="the config's [quick] subset (minutes, for CI)"
    )
    bench.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: run.out)")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from embedrec.eval.bench import run_bench
    from embedrec.eval.bench_config import load_bench_config
    from embedrec.eval.report import write_report

    config = load_bench_config(args.config)
    if args.quick:
        config = config.for_quick()
    out = args.out or config.run.out
    console = Console(stderr=True)
    outcome = run_bench(config, out, quick=args.quick, console=console)
    command = shlex.join(["embedrec", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else ""
    paths = write_report(outcome, out, command=command)
    for skip in outcome.skipped:
        console.print(f"skipped {skip['dataset']} / {skip['store']}: {skip['reason']}")
    print(paths["report.md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
