"""What `embedrec calibrate` shows: the table of measured search params and the
recall-vs-effort plot, and the check of a bench run with calibrated stores (`embedrec bench`
with `[run] calibrate`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from embedrec.stores.recall.calibrate import (
    CalibrateSettings,
    Calibration,
    Measurement,
    params_label,
)

PLOT_DPI = 110


def table(cal: Calibration) -> str:
    """A Markdown table of the measured grid points, the chosen one marked."""
    lines = [
        f"| search params | recall@{cal.k} | lower bound ({cal.confidence:.0%}) "
        "| ms/query (held-out batch) | |",
        "|---|---|---|---|---|",
    ]
    for s in cal.measurements:
        mark = "chosen" if s is cal.chosen else ("meets" if s.meets else "")
        lines.append(
            f"| {params_label(s.params)} | {s.recall:.4f} | {s.lower:.4f} | "
            f"{s.ms_per_query:.3f} | {mark} |"
        )
    return "\n".join(lines)


def verdict(cal: Calibration) -> str:
    """One line: what was chosen and stored, or why nothing was."""
    if not cal.search_params:
        best = cal.measurements[0]
        return (
            f"{cal.uri} has no search param: measured recall@{cal.k} {best.recall:.4f} "
            f"(lower bound {best.lower:.4f}); nothing to store"
        )
    if cal.chosen is None:
        best = max(cal.measurements, key=lambda s: s.lower)
        return (
            f"no point of the grid meets recall@{cal.k} >= {cal.target} at "
            f"{cal.confidence:.0%} confidence (best lower bound {best.lower:.4f} at "
            f"{params_label(best.params)}): {_unreached(cal)}; nothing stored"
        )
    stored = "stored as the store's search defaults" if cal.stored else "not stored (--dry-run)"
    return f"chosen {params_label(cal.chosen.params)}: {stored}"


def _unreached(cal: Calibration) -> str:
    """Why no search params met the target, and what would meet it."""
    short = {k: top for k, top in cal.tops.items() if top < cal.exhaustive.get(k, top + 1)}
    if "k_factor" in cal.search_params:  # IVF-PQ: compressed codes choose the candidates
        return (
            f"{'even' if not short else 'up to'} nprobe={cal.tops.get('nprobe')}, "
            "a quantised index ranks its candidates by compressed codes, re-ranking only "
            "k_factor x k of them exactly: an index of full vectors (FAISS IVF,Flat or "
            "HNSW32) would meet it, or a larger [calibrate.grids] k_factor"
        )
    if short:
        return (
            f"the grid stops at {params_label(short)} (max_effort), short of the exhaustive "
            f"{params_label({k: cal.exhaustive[k] for k in short})}: raise "
            "[calibrate] max_effort, or use a Flat (exact) index"
        )
    return (
        f"even {params_label(cal.exhaustive)}, past which the index goes no further, falls "
        "short; a Flat (exact) index would meet it"
    )


def plot(cal: Calibration, path: Path) -> Path:
    """Recall (mean and lower bound) against the search param, or against ms/query with
    several, with the target as a line and the chosen search params marked."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    one = len(cal.search_params) == 1

    def x(s: Measurement) -> float:
        return float(s.params[cal.search_params[0]]) if one else s.ms_per_query

    order = sorted(cal.measurements, key=x)
    xs = [x(s) for s in order]
    ax.plot(xs, [s.recall for s in order], marker="o", label=f"mean recall@{cal.k}")
    ax.plot(xs, [s.lower for s in order], linestyle="--", marker=".",
            label=f"{cal.confidence:.0%} lower bound")  # fmt: skip
    ax.axhline(cal.target, color="grey", linewidth=1, label=f"target {cal.target}")
    if cal.chosen is not None:
        ax.scatter([x(cal.chosen)], [cal.chosen.recall], marker="*", s=180, color="red",
                   zorder=3, label=f"chosen {params_label(cal.chosen.params)}")  # fmt: skip
    if cal.search_params:
        ax.set_xscale("log", base=2)
    if one:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(cal.search_params[0] if one else "ms per query (batch)")
    ax.set_ylabel(f"recall@{cal.k} (tie-aware, own record held out)")
    ax.set_title(f"{cal.uri}: {cal.records:,} records, {cal.queries} queries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return path


def bench_check(rows: Iterable[dict[str, Any]], cfg: CalibrateSettings) -> list[dict[str, Any]]:
    """Per (dataset, store) with a calibrated row: the bench's recall at the calibrated
    defaults, the cheapest grid point whose bench recall meets the target, and how many
    grid steps the calibrated one lies above it (one search param; negative: below it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["store"]), []).append(row)
    out = []
    for (dataset, store), group in groups.items():
        cal = next((r for r in group if r.get("calibrated") is not None), None)
        if cal is None:
            continue
        chosen = cal["calibrated"]
        param = next(iter(chosen), None) if len(chosen) == 1 else None
        values = cfg.grids.get(param, []) if param else []
        meeting = sorted(
            values.index(r["params"][param])
            for r in group
            if param in r["params"] and r["params"][param] in values
            and r["recall"] >= cfg.target_recall
        )  # fmt: skip
        cheapest = values[meeting[0]] if meeting else None
        placed = meeting and param and chosen[param] in values  # an extended grid's value: not
        steps = values.index(chosen[param]) - meeting[0] if placed else None
        out.append({
            "dataset": dataset, "store": store, "chosen": params_label(chosen),
            "bench_recall": cal["recall"], "p50_ms": cal.get("p50_ms"),
            "cheapest_on_bench": f"{param}={cheapest}" if cheapest is not None else None,
            "steps_above": steps, "calibrate_s": cal.get("calibrate_s"),
            "calibration_recall": cal.get("calibration_recall"),
            "calibration_lower": cal.get("calibration_lower"),
        })  # fmt: skip
    return out


def bench_check_table(checks: list[dict[str, Any]], target: float) -> str:
    lines = [
        f"| dataset | store | calibrated | calib. recall (lower) | bench recall | >= {target} "
        "| cheapest meeting on bench | steps above | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        lower = c["calibration_lower"]
        calib = f"{c['calibration_recall']:.4f} ({lower:.4f})" if lower is not None else "n/a"
        p50 = f"{c['p50_ms']:.3f}" if c["p50_ms"] is not None else "n/a"
        lines.append(
            f"| {c['dataset']} | {c['store']} | {c['chosen']} | {calib} | "
            f"{c['bench_recall']:.4f} | {'yes' if c['bench_recall'] >= target else 'NO'} | "
            f"{c['cheapest_on_bench'] or 'none'} | {c['steps_above']} | {p50} |"
        )
    return "\n".join(lines)
