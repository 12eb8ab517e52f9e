"""`embedrec generations URI`, `embedrec rollback URI`, `embedrec drop URI GENERATION`, and
the command-line side of `embedrec ingest --rebuild` (the work is in rebuild.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from embedrec.common.output import Output, add_output_flags


def register(sub: argparse._SubParsersAction) -> None:
    """Add the generation commands to `sub`."""
    p = sub.add_parser(
        "generations",
        help="list an alias's generations: live, previous (for rollback), building and unlisted",
        description="Each generation with its store's description (embedder, count), and "
        "the rebuild running, if any (its pid, host, start and the generation it builds).",
    )
    p.add_argument("store", metavar="URI", help="the alias, e.g. faiss:./data/movies")
    add_output_flags(p)
    p.set_defaults(func=_generations)
    p = sub.add_parser(
        "rollback",
        help="point an alias back at its previous generation",
        description="Atomically point the alias at its previous generation. The generation "
        "it leaves stays on disk, unlisted, until `embedrec drop` or the next rebuild.",
    )
    p.add_argument("store", metavar="URI")
    add_output_flags(p)
    p.set_defaults(func=_rollback)
    p = sub.add_parser(
        "drop",
        help="delete a generation of an alias (never the live one)",
        description="Delete a generation that is not live, and forget it as a previous one.",
    )
    p.add_argument("store", metavar="URI")
    p.add_argument("generation", metavar="GENERATION", help="e.g. g0002")
    add_output_flags(p)
    p.set_defaults(func=_drop)


def _describe(generation: Any, role: str) -> dict[str, Any]:
    """One row of the listing: its store's embedder and count, or why they are unknown."""
    # for these commands only: --help stays fast
    from embedrec.stores import StoreError, open_existing

    row = {"generation": generation.name, "role": role, "uri": generation.uri}
    try:
        with open_existing(generation.uri) as store:
            info = store.info
            row["count"] = store.count()
            row["embedder"] = info.embedder if info else None
            row["embedder_name"] = info.embedder_name if info else None
    except StoreError as exc:  # a half-built generation may not open: say so, list the rest
        row["error"] = str(exc)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        what = row.get("error") or (
            f"{row['count']:,} records, embedder {row['embedder'] or '(not recorded)'}"
        )
        lines.append(f"{row['generation']:>7}  {row['role']:<8}  {what}  {row['uri']}")
    return "\n".join(lines)


def _generations(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.stores.lifecycle.aliases import alias_book

    out = Output.from_args(args, "generations")
    book = alias_book(args.store)
    state = book.state()
    running = book.running()
    if running is not None:
        out.say(f"a rebuild is running: {running.describe()}")
    if state.live is None:
        out.say(
            f"{args.store} is not an alias (a plain store, or nothing); the first "
            "`embedrec ingest --rebuild` makes it one"
        )
    rows = [_describe(state.live, "live")] if state.live else []
    rows += [_describe(g, "previous") for g in state.previous]
    building = running.generation if running is not None else None
    rows += [_describe(g, "building" if g.name == building else "unlisted") for g in state.unlisted]
    rebuild = running.describe() if running is not None else None
    out.summary(
        {"alias": state.alias, "generations": rows, "rebuild": rebuild},
        _table(rows) if rows else None,
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.stores.lifecycle.aliases import alias_book

    out = Output.from_args(args, "rollback")
    book = alias_book(args.store)
    left = book.live_token()
    state = book.rollback()
    assert state.live is not None
    out.summary(
        {"alias": state.alias, "live": state.live.name, "left": left},
        f"{state.alias}: live {state.live.name} (was {left}; {left} is kept, unlisted, "
        "until `embedrec drop` or the next rebuild)",
    )
    return 0


def _drop(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.stores.lifecycle.aliases import alias_book

    out = Output.from_args(args, "drop")
    book = alias_book(args.store)
    book.drop(book.generation(args.generation))
    out.summary({"alias": args.store, "dropped": args.generation}, f"dropped {args.generation}")
    return 0


def run_rebuild(
    config: Any,
    parts: tuple[Any, Any, Any],
    checks: Any,
    out: Output,
    *,
    progress: bool,
    wait: bool = False,
    stage: Any = None,
) -> int:
    """`embedrec ingest --rebuild`: header, progress, the summary; exit 1 on a failed
    validation (the alias untouched). `stage`: where it embeds (`--engine ray`)."""
    # for this command only: --help stays fast
    from embedrec.common.progress import Progress
    from embedrec.ingestion.rebuild import RebuildFailed, rebuild

    source, embedder, options = parts
    alias, spec = config.store.uri, config.embedder.spec
    out.say(f"rebuild {source.path} -> {alias} with {spec}")
    bar = Progress(source.estimate_rows(), "rebuild", "rows", enabled=progress and out.progress)
    try:
        with bar:
            done = rebuild(
                source,
                alias,
                spec,
                options,
                embedder=embedder,
                checks=checks,
                progress=bar.update,
                say=out.say,
                wait=wait,
                stage=stage,
            )
    except RebuildFailed as exc:
        _report(out, exc.result, embedder)
        print(f"embedrec ingest: error: {exc}", file=sys.stderr, flush=True)
        return 1
    _report(out, done, embedder)
    return 0


def _report(out: Output, done: Any, embedder: Any) -> None:
    """The ingest summary and the validation, then where the alias points."""
    rows = done.summary.items()
    figures = done.figures()
    if done.calibration is not None:
        # late: `embedrec --help` stays fast (the rebuild has loaded it by now)
        from embedrec.stores.recall.calibrate import params_label

        chosen = done.calibration.chosen
        stored = chosen is not None and chosen.params
        rows.append(("calibrated", params_label(chosen.params) if stored else "none stored"))
    if done.validation is not None:
        v = done.validation
        rows.append(("count", f"{v.count:,} (expected {v.expected:,})"))
        rows.append(("fetched", f"{v.fetched} ({len(v.mismatches)} differ)"))
        recall = "-" if v.recall is None else f"{v.recall:.3f} on {v.queries} queries"
        rows.append(("recall@10", recall))
    if done.state is not None and done.state.live is not None:
        before = ", ".join(g.name for g in done.state.previous) or "none"
        rows.append(("live", f"{done.state.live.name} (previous: {before})"))
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{key:>{width}}  {value}" for key, value in rows)
    counts = {k: v for k, v in vars(done.summary).items() if isinstance(v, int | float)}
    out.summary({**figures, **counts, "embedder": embedder.name}, text)
