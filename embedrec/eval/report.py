"""The bench's outputs: DIR/results.json, results.csv, report.md and PNG plots.

The operating point of a store on a dataset is its fastest measurement (queries per second
from one client, single queries, as ann-benchmarks plots) whose tie-aware recall reaches the
target; a store that never reaches it is shown at its best recall, marked as short of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from embedrec.eval.bench import Outcome

PLOT_DPI = 110


def operating_points(rows: Iterable[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per (dataset, store): the highest-`qps_1` row with `recall >= target` (`reached`
    True), else the highest-recall row (ties to the faster one; `reached` False)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset_id"], row["store"]), []).append(row)
    out = []
    for group in groups.values():
        good = [r for r in group if r["recall"] >= target]
        if good:
            best = max(good, key=lambda r: r["qps_1"])
        else:
            best = max(group, key=lambda r: (r["recall"], r["qps_1"]))
        out.append({**best, "reached": bool(good)})
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        if value == 0 or abs(value) >= 10 ** (digits + 1):
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 2, 1)}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _save(fig, path: Path) -> str:  # type: ignore[no-untyped-def]
    """Write a finished figure as PNG, free it, and return the file's name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path.name


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _plots(
    frame: pd.DataFrame, points: pd.DataFrame, target: float, out: Path
) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[str]] = {"recall_qps": [], "latency": [], "scale": [], "pca": []}
    for (_, name), group in frame.groupby(["dataset_id", "dataset"], sort=False):
        first = group.iloc[0]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for store, g in group.groupby("store", sort=False):
            front = _pareto(g)
            (line,) = ax.plot(front["recall"], front["qps_1"], marker="o", label=store)
            ax.scatter(g["recall"], g["qps_1"], color=line.get_color(), alpha=0.35, s=14)
        ax.axvline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{first['k']} (tie-aware)")
        ax.set_ylabel("queries per second (1 client; line: Pareto frontier)")
        ax.set_title(f"{name}: {first['n']:,} x {first['dim']}, {first['metric']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"recall_qps_{_file_part(name)}.png"
        made["recall_qps"].append(_save(fig, path))

        p = points[points["dataset_id"] == first["dataset_id"]]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.27
        xs = range(len(p))
        for i, pct in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            ax.bar([x + (i - 1) * width for x in xs], p[pct], width, label=pct[:-3])
        ax.set_xticks(
            list(xs), [f"{s}\n{q}" for s, q in zip(p["store"], p["param"], strict=True)], fontsize=7
        )
        ax.set_yscale("log")
        ax.set_ylabel("single-query latency (ms)")
        ax.set_title(f"{name}: latency at each store's operating point")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        path = out / f"latency_{_file_part(name)}.png"
        made["latency"].append(_save(fig, path))

    scaled = points[points["scale_group"].notna()]
    for group_name, g in scaled.groupby("scale_group"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        panels = (
            ("build_total_s", "ingest + build (s)"),
            ("rss_growth_mb", "RSS growth (MB)"),
            ("p50_ms", "p50 latency (ms)"),
        )
        for ax, (col, label) in zip(axes, panels, strict=True):
            for store, s in g.groupby("store", sort=False):
                s = s.sort_values("n")
                ax.plot(s["n"], s[col].clip(lower=1e-3), marker="o", label=store)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("N (base vectors)")
            ax.set_title(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"scale: {group_name}")
        path = out / f"scale_{_file_part(str(group_name))}.png"
        made["scale"].append(_save(fig, path))

    pca = _pca_frame(frame)
    for source, g in pca.groupby("source"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for store, s in g.groupby("store", sort=False):
            s = s.sort_values("dim")
            ax.plot(s["dim"], s["recall"], marker="o", label=store)
        ax.set_xlabel("dimensions after PCA")
        ax.set_ylabel("best recall vs full-dimension exact neighbours")
        ax.set_title(f"PCA study: {source}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"pca_{_file_part(str(source))}.png"
        made["pca"].append(_save(fig, path))
    return made


def _pareto(group: pd.DataFrame) -> pd.DataFrame:
    """The measurements no other beats in both recall and QPS (ann-benchmarks' frontier)."""
    ordered = group.sort_values(["recall", "qps_1"], ascending=False)
    best = ordered["qps_1"].cummax()
    return ordered[ordered["qps_1"] >= best].sort_values("recall")


def _pca_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (PCA source, store, dim): the best-recall row, with the source's own rows (full
    dimension) for comparison."""
    reduced = frame[frame["source"].notna()]
    if reduced.empty:
        return reduced
    full = frame[frame["dataset"].isin(reduced["source"].unique()) & frame["source"].isna()]
    full = full.assign(source=full["dataset"])
    both = pd.concat([reduced, full[full["store"].isin(reduced["store"].unique())]])
    return (
        both.sort_values(["recall", "qps_1"])
        .groupby(["source", "store", "dim"], as_index=False)
        .last()
    )


def _summary_md(points: pd.DataFrame, target: float) -> list[str]:
    md = []
    for (_, name), p in points.groupby(["dataset_id", "dataset"], sort=False):
        first = p.iloc[0]
        reached = p[p["reached"]].sort_values("qps_1", ascending=False)
        shape = f"{first['n']:,} x {first['dim']}, {first['metric']}, {first['nq']:,} queries"
        md.append(f"### {name} ({shape})")
        if reached.empty:
            ceiling = p["recall"].max()
            md.append(
                f"\nNo store reached recall {target}; the best is {ceiling:.3f}"
                + (
                    f": the {first['dim']}-d vectors are judged against {int(first['full_dim'])}-d "
                    "exact neighbours, so even exact search is capped there.\n"
                    if pd.notna(first.get("full_dim"))
                    else ".\n"
                )
            )
        else:
            w = reached.iloc[0]
            md.append(
                f"\n**Fastest to recall {target}: {w['store']}** at `{w['param']}`: "
                f"{_fmt(w['qps_1'])} QPS (p50 {_fmt(w['p50_ms'])} ms), recall {w['recall']:.3f}, "
                f"build {_fmt(w['build_total_s'])} s, RSS +{_fmt(w['rss_growth_mb'])} MB, "
                f"disk {_fmt(w['disk_mb'])} MB.\n"
            )
        rows = []
        for _, r in p.sort_values("qps_1", ascending=False).iterrows():
            rows.append([
                r["store"], r["param"] + ("" if r["reached"] else " (short)"), r["recall"],
                r["recall_by_id"], r["qps_1"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
                r["qps_batch"], *[r.get(c) for c in _client_cols(points)], r["ingest_s"],
                r["build_s"], r["rss_growth_mb"], r["rss_peak_growth_mb"], r["disk_mb"],
            ])  # fmt: skip
        headers = [
            "store", "param", "recall", "recall by id", "QPS 1", "p50 ms", "p95 ms", "p99 ms",
            "QPS batch", *[f"QPS {c[4:]}" for c in _client_cols(points)], "ingest s", "build s",
            "RSS +MB", "peak +MB", "disk MB",
        ]  # fmt: skip
        md += [_table(headers, rows), ""]
    return md


def _client_cols(frame: pd.DataFrame) -> list[str]:
    cols = [c for c in frame.columns if c.startswith("qps_") and c[4:].isdigit() and c != "qps_1"]
    return sorted(cols, key=lambda c: int(c[4:]))


def _scale_md(points: pd.DataFrame) -> list[str]:
    md = []
    scaled = points[points["scale_group"].notna()]
    for group_name, g in scaled.groupby("scale_group"):
        ns = sorted(g["n"].unique())
        md.append(f"### {group_name}: N = {', '.join(f'{n:,}' for n in ns)}\n")
        rows = []
        for store, s in g.groupby("store", sort=False):
            s = s.set_index("n")
            for col, label in (
                ("build_total_s", "ingest+build s"),
                ("rss_growth_mb", "RSS +MB"),
                ("p50_ms", "p50 ms"),
            ):
                values = [s[col].get(n) for n in ns]
                lo, hi = values[0], values[-1]
                growth = f"x{hi / lo:.1f}" if lo and hi and len(ns) > 1 else "n/a"
                rows.append([store, label, *values, growth])
        span = f"x{ns[-1] / ns[0]:.0f} N" if len(ns) > 1 else "growth"
        md += [_table(["store", "cost", *[f"{n:,}" for n in ns], span], rows), ""]
    return md


def _pca_md(frame: pd.DataFrame) -> list[str]:
    pca = _pca_frame(frame)
    md = []
    for source, g in pca.groupby("source"):
        dims = sorted(g["dim"].unique())
        rows = []
        for store, s in g.groupby("store", sort=False):
            s = s.set_index("dim")
            rows.append(
                [
                    store,
                    *[
                        f"{s['recall'][d]:.3f} ({s['param'][d]})" if d in s.index else "n/a"
                        for d in dims
                    ],
                ]
            )
        md += [f"### {source}\n", _table(["store", *[f"{d} dims" for d in dims]], rows), ""]
    return md


def _overhead_md(frame: pd.DataFrame) -> list[str]:
    """Each measurement against the harness cost measured in its own worker, so that a
    slow moment in one job does not stand for every job."""
    share = frame["harness_us_per_query"] / (frame["mean_ms"] * 1e3)
    worst = frame.loc[share.idxmax()]
    fastest = frame.loc[frame["mean_ms"].idxmin()]
    verdict = "within" if share.max() < 0.05 else "OVER"
    return [
        f"The timing loop costs {_fmt(frame['harness_us_per_query'].median())} µs per query "
        f"(median over jobs; at most {_fmt(frame['harness_us_per_query'].max())}): a no-op "
        "timed the way each store is, in each store's own worker; inside the timer, "
        f"{_fmt(frame['harness_timed_us'].median())} µs. Its largest share of a measurement "
        f"is {share.max():.2%}, {verdict} the 5% target: {worst['store']} `{worst['param']}` "
        f"on {worst['dataset']}, {_fmt(worst['mean_ms'] * 1e3)} µs per query against "
        f"{_fmt(worst['harness_us_per_query'])} µs of harness. (The fastest measurement is "
        f"{fastest['store']} `{fastest['param']}` on {fastest['dataset']}, "
        f"{_fmt(fastest['mean_ms'] * 1e3)} µs.) The concurrent driver alone reaches "
        f"{_fmt(frame['harness_max_qps_16'].min())} QPS with 16 threads (a no-op), the "
        "ceiling of any concurrent figure here.",
        "",
    ]


def write_report(outcome: Outcome, out: Path, command: str = "") -> dict[str, Path]:
    """Write results.json, results.csv, report.md and the plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    target = outcome.meta["target_recall"]
    points_list = operating_points(outcome.rows, target)
    paths = {name: out / name for name in ("results.json", "results.csv", "report.md")}
    paths["results.json"].write_text(
        json.dumps(
            {
                "meta": outcome.meta,
                "datasets": [asdict(d) for d in outcome.datasets],
                "rows": outcome.rows,
                "operating_points": [
                    {
                        k: p[k]
                        for k in (
                            "dataset",
                            "dataset_id",
                            "store",
                            "param",
                            "params",
                            "recall",
                            "qps_1",
                            "reached",
                        )
                    }
                    for p in points_list
                ],
                "skipped": outcome.skipped,
            },
            indent=1,
        )
    )
    frame = pd.DataFrame(outcome.rows)
    if not frame.empty:
        frame["build_total_s"] = frame["ingest_s"] + frame["build_s"]
    csv = frame.assign(params=frame["params"].map(json.dumps)) if not frame.empty else frame
    csv.to_csv(paths["results.csv"], index=False)

    meta = outcome.meta
    md = [
        "# Vector store benchmark",
        "",
        f"{'Quick run (--quick)' if meta['quick'] else 'Full run'}, finished {meta['finished']}; "
        f"k = {meta['k']}, target recall {target}; OpenMP threads per worker: "
        f"{meta['threads'] or 'all'}; {meta['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in meta['load_avg'])} (a shared machine: compare stores "
        "within one run).",
    ]
    if command:
        md += ["", f"Command: `{command}`"]
    md += [
        "",
        "Recall is ann-benchmarks' (a hit counts when it is no farther than the k-th true "
        "neighbour + 1e-3); recall by id counts true ids only. QPS 1 is one client issuing "
        "single queries in a loop; QPS 4/16 are that many client threads; QPS batch is one "
        "call with every query. Build is `flush()` (index training/optimising, saving). RSS is "
        "the growth of a fresh worker process over its loaded data; for server stores it is "
        "the client's only.",
        "",
    ]
    if frame.empty:
        md += ["No measurements: every store or dataset was skipped (see below).", ""]
        made: dict[str, list[str]] = {}
    else:
        points = pd.DataFrame(points_list)
        points["build_total_s"] = points["ingest_s"] + points["build_s"]
        made = _plots(frame, points, target, out)
        md += [f"## At a glance: the fastest store to recall {target} per dataset", ""]
        md += _summary_md(points, target)
        if made["scale"]:
            md += ["## Scale: how each cost grows with N (at each store's operating point)", ""]
            md += _scale_md(points)
        if made["pca"]:
            md += [
                "## Dimensionality: PCA-reduced vectors against full-dimension exact neighbours",
                "",
                "Best recall over each store's sweep (its parameter in brackets).",
                "",
            ]
            md += _pca_md(frame)
        md += ["## Harness overhead", "", *_overhead_md(frame)]
        md += ["## Plots", ""]
        md += [f"![{name}]({name})" for names in made.values() for name in names] + [""]
    if outcome.skipped:
        md += ["## Skipped", ""]
        md += [
            _table(
                ["dataset", "store", "reason"],
                [[s["dataset"], s["store"], s["reason"]] for s in outcome.skipped],
            ),
            "",
        ]
    paths["report.md"].write_text("\n".join(md))
    for names in made.values():
        for name in names:
            paths[name] = out / name
    return paths
