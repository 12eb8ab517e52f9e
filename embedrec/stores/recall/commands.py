"""`embedrec calibrate STORE --target-recall 0.95`: the cheapest search effort that meets a
recall target, kept as the store's search defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from embedrec.common.output import Output, add_output_flags

DEFAULT_CONFIG = Path("configs/calibrate.toml")
EPILOG = """\
How it measures: QUERIES stored vectors (seeded sample) are each searched as if their record
were not stored (left out of the hits, and not leading a graph search to its neighbours);
exact answers are brute force over every vector the store's fetch returns (for FAISS SQ8:
its quantised vectors), own record left out. Recall is tie-aware
recall@k, as `embedrec bench` reports it. Search params meet the target when the one-sided
lower confidence bound on mean recall, mean - z(CONFIDENCE) * sd / sqrt(QUERIES) (normal
approximation), is at least the target; the cheapest such point of the grid (first in
grid order for one search param; fastest measured for several) is stored in the store's info as
its search defaults, which `search()` then uses when a call gives no params (a call's own
params win; filters still raise the effort from them).

The search params and their grids come from the [calibrate.grids] section of CONFIG: FAISS
HNSW `ef`, IVF `nprobe`, IVF-PQ `nprobe` x `k_factor`, Qdrant (`qdrant+edge`,
`qdrant+local`, server) `ef` (hnsw_ef). Each grid runs on (steps of 1.5x) to the value
where the index is exhaustive: nprobe = nlist, ef = the live count, capped at [calibrate]
max_effort (16384); so a target the index can reach is reached. A store with no search
param (flat FAISS, SQ8, Pinecone, qdrant+local's brute force) gets its recall measured
only. Exit status: 0 calibrated (or measured), 1 no point of the grid meets the target
(nothing stored; the message says what would meet it), 2 bad input."""


def register(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="find the cheapest search effort meeting a target recall; store it as default",
        description="Measure recall@k of STORE against exact search over its search params'\n"
        "grid, and store the cheapest that meet --target-recall with the stated\n"
        "confidence as the store's search defaults. Prints a table (and, with --plot, a PNG).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cal.add_argument("store", metavar="STORE", help="store URI (faiss:DIR, qdrant+edge:DIR, ...)")
    cal.add_argument("--target-recall", type=float, metavar="R", help="default: config, 0.95")
    cal.add_argument("--k", type=int, help="recall@k (default: config, 10)")
    cal.add_argument("--queries", type=int, metavar="N", help="stored vectors used as queries")
    cal.add_argument("--confidence", type=float, metavar="C", help="of the lower bound (0.95)")
    cal.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="CONFIG",
        help=f"TOML with a [calibrate] section and its grids (default: {DEFAULT_CONFIG})",
    )  # fmt: skip
    cal.add_argument(
        "--ids", type=Path, metavar="FILE", help="every id the store holds, one a line, for "
        "stores that cannot list their ids, such as Pinecone (default: the store's list)",
    )  # fmt: skip
    cal.add_argument(
        "--plot", type=Path, metavar="PNG", help="write the recall plot there (default: no plot)"
    )
    cal.add_argument("--dry-run", action="store_true", help="measure and report, store nothing")
    add_output_flags(cal)
    cal.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading numpy, matplotlib and the stores
    from embedrec.common.config import validate
    from embedrec.stores import open_store
    from embedrec.stores.recall.calibrate import (
        CalibrateSettings,
        calibrate,
        load_calibrate_config,
        save_defaults,
    )
    from embedrec.stores.recall.report import plot, table, verdict

    output = Output.from_args(args, "calibrate")
    if not args.config.is_file():
        raise ValueError(
            f"no calibration config at {args.config}: pass --config FILE with a [calibrate] "
            "section and its grids (see configs/calibrate.toml)"
        )
    base = load_calibrate_config(args.config)
    given = {"target_recall": args.target_recall, "k": args.k, "queries": args.queries,
             "confidence": args.confidence}  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    cfg = validate({**base.model_dump(), **given}, CalibrateSettings, "command line")
    ids = None
    if args.ids is not None:
        ids = [line.strip() for line in args.ids.read_text().splitlines() if line.strip()]
    with open_store(args.store, dim=None, metric=None) as store:
        cal = calibrate(
            store, cfg, ids=ids, ids_from=args.ids, progress=output.progress, say=output.say
        )
        if cal.chosen is not None and not args.dry_run:
            save_defaults(store, cal)
    png = plot(cal, args.plot) if args.plot is not None else None
    text = f"{table(cal)}\n\n{verdict(cal)}\n{cal.note}" + (f"\nwrote {png}" if png else "")
    output.summary({**cal.to_json(), "plot": png}, text)
    return 1 if cal.search_params and cal.chosen is None else 0
