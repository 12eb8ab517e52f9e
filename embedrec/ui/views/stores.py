"""Stores: the latest `embedrec bench` run: recall vs QPS and latency per store, and the
table of each store's operating point, for a chosen dataset and set of stores."""

from __future__ import annotations

import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from embedrec.ui.results import BENCH_FILE, BenchRun
from embedrec.ui.views.latest import pick_file
from embedrec.ui.widgets import TWO_TOWER

LABEL = "Bench run (newest first)"
NONE_FOUND = "No bench results under {}: run `embedrec bench configs/bench.toml` (or `make demo`)."

ABOUT = (
    "How the vector stores compare on the same vectors (`embedrec bench`): recall against "
    "exact search, queries per second and latency, at each store's search settings. "
    f"{TWO_TOWER}"
)
TABLE = ["store", "param", "recall", "qps_1", "p50_ms", "p95_ms", "p99_ms", "build_s", "disk_mb"]


MISSED_FLOOR = 1e-4
"""Where a recall of 1 is drawn on the log axis of what is missed."""


def _recall_qps(rows: pd.DataFrame) -> alt.Chart:
    """QPS against what each setting misses (1 - recall) on a log axis, reversed: recalls
    of 0.9, 0.99 and 0.999 lie apart, where a recall axis piles them at its right edge."""
    rows = rows.assign(missed=(1 - rows["recall"]).clip(lower=MISSED_FLOOR))
    return (
        alt.Chart(rows)
        .mark_line(point=alt.OverlayMarkDef(size=90, filled=True), strokeWidth=2.5)
        .encode(
            x=alt.X(
                "missed:Q",
                scale=alt.Scale(type="log", reverse=True),
                title="1 - recall@k (log; right is better)",
            ),
            y=alt.Y("qps_1:Q", scale=alt.Scale(type="log"), title="queries per second (1 client)"),
            color=alt.Color("store:N", scale=alt.Scale(scheme="dark2")),
            order="recall:Q",
            tooltip=["store", "param", "recall", "qps_1"],
        )
        .properties(title="Recall vs QPS", height=320)
    )


def _latency(points: pd.DataFrame) -> alt.Chart:
    cols = [c for c in ("p50_ms", "p95_ms", "p99_ms") if c in points.columns]
    long = points.melt(id_vars=["store"], value_vars=cols, var_name="percentile", value_name="ms")
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("store:N", title=None),
            xOffset="percentile:N",
            # symlog: a log-like axis that, unlike log, has the zero a bar starts from
            y=alt.Y("ms:Q", scale=alt.Scale(type="symlog"), title="latency (ms)"),
            color="percentile:N",
            tooltip=["store", "percentile", "ms"],
        )
        .properties(title="Latency at each store's operating point", height=320)
    )


def render(results: tuple[Path, ...]) -> None:
    st.caption(ABOUT)
    started = time.perf_counter()
    picked = pick_file(results, BENCH_FILE, BenchRun.load, LABEL, NONE_FOUND)
    if picked is None:
        return
    path, run = picked
    if run.rows.empty:
        st.info(f"{path} holds no measurements.")
        return
    pick, which = st.columns([1, 2])
    dataset = pick.selectbox("Dataset", run.datasets, key="bench-dataset")
    in_dataset = run.rows[run.rows["dataset"] == dataset]
    present = list(dict.fromkeys(in_dataset["store"]))
    stores = which.multiselect("Stores", present, default=present, key="bench-stores")
    rows = in_dataset[in_dataset["store"].isin(stores)]
    points = run.points[(run.points["dataset"] == dataset) & run.points["store"].isin(stores)]
    st.caption(
        f"read {path} in {(time.perf_counter() - started) * 1e3:.1f} ms · "
        f"target recall {run.meta.get('target_recall', '?')} · k {run.meta.get('k', '?')}"
    )
    if rows.empty:
        st.info("Choose at least one store.")
        return
    left, right = st.columns(2)
    left.altair_chart(_recall_qps(rows), width="stretch")
    if not points.empty:
        right.altair_chart(_latency(points), width="stretch")
    st.subheader("Operating points")
    shown = points if not points.empty else rows
    st.dataframe(shown[[c for c in TABLE if c in shown.columns]], hide_index=True)
    plots = run.plots(dataset)
    if plots:
        with st.expander("The bench's own plots"):
            for plot in plots:
                st.image(str(plot))
