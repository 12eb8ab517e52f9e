"""The drift report: Markdown and its PNG plots (overlap histogram, norm distributions,
coverage and Gini bars) of the figures drift_figures.py computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from embedrec.eval.drift.gauges import Neighbours, Recommendations

PLOT_DPI = 110


# ------------------------------------------------------------------------------ plots


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return path.name


def _overlap_plot(rec: Recommendations, k: int, out: Path) -> str:
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    counts = np.bincount(np.rint(rec.overlap * k).astype(int), minlength=k + 1)
    ax.bar(np.arange(k + 1) / k, counts, width=0.8 / k)
    if rec.candidates:
        ax.axvline(k / rec.candidates, color="grey", linestyle="--", label="chance")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"overlap@{k} of the two models' lists")
    ax.set_ylabel("users")
    ax.set_title(f"Overlap@{k} over {len(rec.overlap):,} sampled users")
    return _save(fig, out / "overlap.png")


def _norms_plot(nn: Neighbours, out: Path) -> str:
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    both = np.concatenate([nn.old_norms, nn.new_norms])
    pad = 0.01 if float(both.max() - both.min()) > 1e-3 else 0.05  # unit vectors: one bar
    bins = np.linspace(float(both.min()) - pad, float(both.max()) + pad, 40)
    ax.hist(nn.old_norms, bins=bins, alpha=0.6, label="old")
    ax.hist(nn.new_norms, bins=bins, alpha=0.6, label="new")
    ax.set_xlabel("item-vector L2 norm")
    ax.set_ylabel("sampled items")
    ax.set_title("Item-vector norms")
    ax.legend(fontsize=8)
    return _save(fig, out / "norms.png")


def _coverage_plot(fig_data: dict[str, Any], out: Path) -> str:
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    names = ["coverage", "Gini"]
    old = [fig_data["coverage_old"], fig_data["gini_old"]]
    new = [fig_data["coverage_new"], fig_data["gini_new"]]
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, old, 0.4, label="old")
    ax.bar(xs + 0.2, new, 0.4, label="new")
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1)
    ax.set_title("Catalog coverage and popularity concentration of the lists")
    ax.legend(fontsize=8)
    return _save(fig, out / "coverage_gini.png")


def plots(rec: Recommendations | None, nn: Neighbours, fig_data: dict, out: Path) -> list[str]:
    """The report's PNGs written into `out`; their file names."""
    made = [_norms_plot(nn, out)]
    if rec is not None:
        made += [_overlap_plot(rec, fig_data["k"], out), _coverage_plot(fig_data, out)]
    return made


# ------------------------------------------------------------------------------ Markdown


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _summary_row(name: str, s: dict[str, float]) -> str:
    cells = [_f(s.get(c)) for c in ("mean", "std", "min", "p5", "p50", "p95", "max")]
    return f"| {name} | " + " | ".join(cells) + " |"


def _checks_md(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return ["No thresholds set (add them to a `[drift]` config section)."]
    lines = ["| threshold | limit | figure | value | result |", "|---|---|---|---|---|"]
    verdict = {True: "pass", False: "**FAIL**", None: "not measured"}
    for c in checks:
        lines.append(
            f"| {c['threshold']} | {_f(c['limit'])} | {c['figure']} | {_f(c['value'])} "
            f"| {verdict[c['passed']]} |"
        )
    return lines


def _lists_md(d: dict[str, Any]) -> list[str]:
    k = d["k"]
    return [
        f"## Recommendation lists ({d['sampled_users']:,} sampled users, top-{k}, seen items "
        "left out)",
        "",
        "| | mean | std | min | p5 | p50 | p95 | max |",
        "|---|---|---|---|---|---|---|---|",
        _summary_row(f"overlap@{k}", d["overlap"]),
        _summary_row("Kendall tau-b (union)", d["rank_correlation"]),
        "",
        f"Chance overlap (two random lists of {k} from the mean number of unseen items): "
        f"{_f(d['overlap_chance'])}. Rank correlation is Kendall's tau-b over the union of the "
        "two lists, each item scored by both models: it counts the pairs both models order "
        "the same way, which is what a ranked list is, and unlike Spearman it is not dominated "
        "by the few union items that one model ranks far down its catalog. An item only one "
        "model lists makes discordant pairs with the other's picks, so tau is 1 for identical "
        "lists, nears 0 as they part and is well below 0 when they share nothing.",
        "",
        "| | old | new | change |",
        "|---|---|---|---|",
        f"| catalog coverage | {_f(d['coverage_old'])} | {_f(d['coverage_new'])} "
        f"| {_f(d['coverage_new'] - d['coverage_old'])} |",
        f"| Gini of recommendation counts | {_f(d['gini_old'])} | {_f(d['gini_new'])} "
        f"| {_f(d['gini_increase'])} |",
        "",
        "![overlap](overlap.png) ![coverage and Gini](coverage_gini.png)",
        "",
    ]


def markdown(d: dict[str, Any], checks: list[dict[str, Any]], old: str, new: str) -> str:
    """The report: thresholds first (what a pipeline acts on), then each figure."""
    lines = [f"# Drift: `{old}` -> `{new}`", "", "## Thresholds", "", *_checks_md(checks), ""]
    if "overlap" in d:
        lines += _lists_md(d)
    lines += [
        f"## Items ({d['sampled_items']:,} sampled of {d['catalog_items']:,}; neighbours by "
        f"{d['neighbours_by']}, top-{d['k']}, the item itself left out)",
        "",
        "| | mean | std | min | p5 | p50 | p95 | max |",
        "|---|---|---|---|---|---|---|---|",
        _summary_row(f"neighbour Jaccard@{d['k']}", d["neighbour_jaccard"]),
        _summary_row("norm (old)", d["norms_old"]),
        _summary_row("norm (new)", d["norms_new"]),
        _summary_row("per-item relative norm change", d["norm_relative_change"]),
        "",
        f"Shift of the mean norm: {_f(d['norm_shift'])} (relative). ![norms](norms.png)",
        "",
    ]
    return "\n".join(lines)


def write(
    out: Path, d: dict[str, Any], checks: list[dict[str, Any]], md: str,
    rec: Recommendations | None, nn: Neighbours,
) -> tuple[Path, Path]:  # fmt: skip
    """DIR/drift.md, DIR/drift.json and the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    plots(rec, nn, d, out)
    js = out / "drift.json"
    js.write_text(json.dumps({"figures": d, "checks": checks}, indent=1) + "\n")
    report = out / "drift.md"
    report.write_text(md)
    return report, js
