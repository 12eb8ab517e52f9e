"""The bench report's PNG plots: recall vs QPS with the Pareto frontier, latency at each
store's operating point, cost against N for scale groups, and recall against PCA dimension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

PLOT_DPI = 110


def plots(
    frame: pd.DataFrame, points: pd.DataFrame, target: float, out: Path
) -> dict[str, list[str]]:
    """Every plot of the report written into `out`: kind -> file names."""
    made: dict[str, list[str]] = {"recall_qps": [], "latency": [], "scale": [], "pca": []}
    for (_, name), group in frame.groupby(["dataset_id", "dataset"], sort=False):
        made["recall_qps"].append(_recall_plot(group, name, target, out))
        dataset_points = points[points["dataset_id"] == group.iloc[0]["dataset_id"]]
        made["latency"].append(_latency_plot(dataset_points, name, out))
    scaled = points[points["scale_group"].notna()]
    for group_name, g in scaled.groupby("scale_group"):
        made["scale"].append(_scale_plot(g, str(group_name), out))
    for source, g in pca_frame(frame).groupby("source"):
        made["pca"].append(_pca_plot(g, str(source), out))
    return made


def _recall_plot(group: pd.DataFrame, name: str, target: float, out: Path) -> str:
    first = group.iloc[0]
    fig, ax = _figure(figsize=(7, 4.5))
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
    return _save(fig, out / f"recall_qps_{_file_part(name)}.png")


def _latency_plot(p: pd.DataFrame, name: str, out: Path) -> str:
    fig, ax = _figure(figsize=(7, 4))
    width = 0.27
    xs = range(len(p))
    for i, pct in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax.bar([x + (i - 1) * width for x in xs], p[pct], width, label=pct[:-3])
    labels = [f"{s}\n{q}" for s, q in zip(p["store"], p["param"], strict=True)]
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("single-query latency (ms)")
    ax.set_title(f"{name}: latency at each store's operating point")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save(fig, out / f"latency_{_file_part(name)}.png")


def _scale_plot(g: pd.DataFrame, group_name: str, out: Path) -> str:
    fig, axes = _figure(1, 3, figsize=(13, 4))
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
    return _save(fig, out / f"scale_{_file_part(group_name)}.png")


def _pca_plot(g: pd.DataFrame, source: str, out: Path) -> str:
    fig, ax = _figure(figsize=(7, 4.5))
    for store, s in g.groupby("store", sort=False):
        s = s.sort_values("dim")
        ax.plot(s["dim"], s["recall"], marker="o", label=store)
    ax.set_xlabel("dimensions after PCA")
    ax.set_ylabel("best recall vs full-dimension exact neighbours")
    ax.set_title(f"PCA study: {source}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"pca_{_file_part(source)}.png")


def _figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure outside pyplot: no backend or global state, nothing to close."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)


def _save(fig: Figure, path: Path) -> str:
    """Write a finished figure as PNG and return the file's name."""
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return path.name


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _pareto(group: pd.DataFrame) -> pd.DataFrame:
    """The measurements no other beats in both recall and QPS (ann-benchmarks' frontier)."""
    ordered = group.sort_values(["recall", "qps_1"], ascending=False)
    best = ordered["qps_1"].cummax()
    return ordered[ordered["qps_1"] >= best].sort_values("recall")


def pca_frame(frame: pd.DataFrame) -> pd.DataFrame:
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
