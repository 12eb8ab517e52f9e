"""`embedrec bench CONFIG.toml [--quick] [--out DIR]`: the store comparison benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from embedrec.common.output import Output, add_output_flags


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
    bench.add_argument(
        "--calibrated", type=Path, metavar="CONFIG", help="calibrate each store after building "
        "it with CONFIG's [calibrate] section (as `embedrec calibrate`) and measure it once "
        "more with no params, i.e. with its calibrated defaults (default: [run] calibrate)",
    )  # fmt: skip
    add_output_flags(bench)
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    # the bench's modules load when it runs, not for --help
    from rich.console import Console

    from embedrec.eval.bench.compare import run_bench
    from embedrec.eval.bench.config import load_bench_config
    from embedrec.eval.bench.report import operating_points, write_report

    output = Output.from_args(args, "bench")
    config = load_bench_config(args.config)
    if args.quick:
        config = config.for_quick()
    if args.calibrated is not None:
        run = config.run.model_copy(update={"calibrate": args.calibrated})
        config = config.model_copy(update={"run": run})
    out = args.out or config.run.out
    stores = ", ".join(s.name for s in config.stores)
    quick = " --quick" if args.quick else ""
    output.say(f"bench {args.config}{quick} -> {out}: {len(config.datasets)} datasets; {stores}")
    console = Console(stderr=True, quiet=args.quiet)
    outcome = run_bench(config, out, quick=args.quick, console=console, progress=output.progress)
    command = shlex.join(["embedrec", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else ""
    paths = write_report(outcome, out, command=command)
    for skip in outcome.skipped:
        console.print(f"skipped {skip['dataset']} / {skip['store']}: {skip['reason']}")
    figures = {
        "out": out,
        "files": {name: str(path) for name, path in paths.items()},
        "measurements": len(outcome.rows),
        "operating_points": operating_points(outcome.rows, config.run.target_recall),
        "skipped": outcome.skipped,
    }
    text = paths["report.md"].read_text() + f"\nwrote {', '.join(map(str, paths.values()))}"
    if config.run.calibrate is not None:
        figures["calibration"], table = _calibration_check(outcome.rows, config.run.calibrate)
        text += f"\n\ncalibrated defaults against the bench's queries:\n{table}"
    output.summary(figures, text)
    return 0


def _calibration_check(rows: list[dict], path: Path) -> tuple[list[dict], str]:
    """Per calibrated store: its bench recall and its distance from the bench's cheapest."""
    # with the bench: matplotlib loads for a run, not for --help
    from embedrec.stores.recall.calibrate import load_calibrate_config
    from embedrec.stores.recall.report import bench_check, bench_check_table

    settings = load_calibrate_config(path)
    checks = bench_check(rows, settings)
    return checks, bench_check_table(checks, settings.target_recall)
