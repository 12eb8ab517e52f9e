"""`embedrec drift OLD NEW`: how far a candidate moved from the live model, with thresholds
that stop a pipeline before the swap (exit 1 names the threshold that failed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from embedrec.common.output import Output, add_output_flags

EPILOG = """\
OLD and NEW are two model files written by `embedrec train`, or two store URIs holding the
same ids (then only item-vector norms and nearest-neighbour sets are compared). Exit status:
0 all thresholds met, 1 a threshold missed, 2 bad input."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `drift` to `sub`."""
    drift = sub.add_parser(
        "drift",
        help="compare a candidate model (or item store) with the live one; exit 1 on drift",
        description="Compare two two-tower models over a seeded sample of users and items: "
        "overlap@k and Kendall tau-b of the recommendation lists, catalog coverage and Gini "
        "of what each recommends, item-vector norms and nearest-neighbour Jaccard@k.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drift.add_argument("old", metavar="OLD", help="the live model file or store URI")
    drift.add_argument("new", metavar="NEW", help="the candidate model file or store URI")
    drift.add_argument("--config", type=Path, help="TOML with a [drift] section (thresholds)")
    drift.add_argument("--out", type=Path, metavar="DIR", help="write drift.md, drift.json, PNGs")
    drift.add_argument("--k", type=int, help="list and neighbour length (default: config, 10)")
    drift.add_argument("--users", type=int, metavar="N", help="users sampled (default 1000)")
    drift.add_argument("--items", type=int, metavar="N", help="items sampled (default 1000)")
    drift.add_argument(
        "--data", type=Path, metavar="CONFIG", help="models: the `embedrec train` config whose "
        "[data] gives users, items and seen interactions (default: [drift] data)",
    )  # fmt: skip
    drift.add_argument(
        "--ids", type=Path, metavar="FILE", help="stores: the ids to sample from, one a line "
        "(default: the item catalog of --data)",
    )  # fmt: skip
    add_output_flags(drift)
    drift.set_defaults(func=_drift)


def _drift(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading pandas and the stores
    from embedrec.common.config import validate
    from embedrec.eval.drift.config import DriftSection, check, load_drift_config
    from embedrec.eval.drift.figures import figures
    from embedrec.eval.drift.inputs import compare, is_store
    from embedrec.eval.drift.report import markdown, write

    output = Output.from_args(args, "drift")
    overrides = {"k": args.k, "users": args.users, "items": args.items, "data": args.data}
    base = load_drift_config(args.config)
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = validate({**base.model_dump(), **given}, DriftSection, "command line")
    if is_store(args.old) != is_store(args.new):
        raise ValueError("OLD and NEW must both be model files or both be store URIs")
    kind = "stores" if is_store(args.old) else "models"
    output.say(f"drift: comparing {kind} {args.old} -> {args.new} (k={cfg.k}, seed={cfg.seed})")
    rec, nn, n_items = compare(args.old, args.new, cfg, args.ids, output.progress)
    d = figures(rec, nn, n_items, cfg.k)
    checks = check(d, cfg)
    md = markdown(d, checks, args.old, args.new)
    written = write(args.out, d, checks, md, rec, nn) if args.out is not None else None
    failed = [c for c in checks if c["passed"] is False]
    for c in failed:
        sign = "<" if c["threshold"].startswith("min_") else ">"
        output.say(f"drift: threshold {c['threshold']} failed: {c['figure']} "
                   f"{c['value']:.4f} {sign} {c['limit']}")  # fmt: skip
    text = md if written is None else f"{md}\nwrote {written[0]} and {written[1]}"
    output.summary(
        {"kind": kind, "old": args.old, "new": args.new, "passed": not failed,
         "failed": [c["threshold"] for c in failed], "checks": checks, "figures": d,
         "report": written[0] if written else None},
        text,
    )  # fmt: skip
    return 1 if failed else 0
