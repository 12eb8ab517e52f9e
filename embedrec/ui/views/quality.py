"""Quality: the latest leaderboard (models by split and scoring) and its cold-start report."""

from __future__ import annotations

import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from embedrec.ui.results import LEADERBOARD_FILE, Leaderboard
from embedrec.ui.views.latest import pick_file
from embedrec.ui.widgets import TWO_TOWER

LABEL = "Leaderboard (newest first)"
FULL = (
    "`embedrec evaluate configs/two_tower.toml --out runs/ml100k` "
    "(every model, two splits, about 9 minutes on 2 cores)"
)
NONE_FOUND = "No leaderboard under {}: `make demo` writes a quick one; the full one: " + FULL + "."
ABOUT = (
    "How well each model ranks held-out interactions (NDCG, precision, recall, MAP at k), by "
    f"split, and on items never seen in training (cold start). {TWO_TOWER} "
    "`make demo` writes a quick leaderboard (data/demo/quality-quick: a 3-epoch two-tower "
    "against most popular, one split); the full one: " + FULL + "."
)


def _bars(frame: pd.DataFrame, metric: str, title: str) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(f"{metric}:Q", title=metric),
            y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=360)),
            tooltip=["label", metric],
        )
        .properties(title=title)
    )


def render(results: tuple[Path, ...]) -> None:
    st.caption(ABOUT)
    started = time.perf_counter()
    picked = pick_file(results, LEADERBOARD_FILE, Leaderboard.load, LABEL, NONE_FOUND)
    if picked is None:
        return
    path, board = picked
    st.caption(
        f"read {path} in {(time.perf_counter() - started) * 1e3:.1f} ms · "
        f"dataset {board.dataset} · k {board.k}"
    )
    if board.protocol:
        st.caption(board.protocol)
    metric = f"ndcg@{board.k}"
    if board.splits:
        split = st.selectbox("Split", board.splits, key="quality-split")
        rows = board.rows[board.rows["split"] == split].copy()
        if metric in rows.columns:
            rows = rows.sort_values(metric, ascending=False)
            rows["label"] = rows["model"] + " · " + rows["scoring"].astype(str)
            st.altair_chart(_bars(rows.dropna(subset=[metric]), metric, split), width="stretch")
        shown = rows.drop(columns=["label", "split", "source"], errors="ignore")
        st.dataframe(shown, hide_index=True)
    st.subheader("Cold start")
    cold = board.cold_start
    recall = f"recall@{board.k}"
    if cold.empty or recall not in cold.columns:
        st.info("This leaderboard has no cold-start report.")
        return
    first = cold.iloc[0]
    st.caption(
        f"{first.get('cold_items', '?')} items held out of training, "
        f"{first.get('users', '?')} users rated them; ranked among those items only"
    )
    st.altair_chart(_bars(cold.assign(label=cold["model"]), recall, "cold start"), width="stretch")
    st.dataframe(cold, hide_index=True)
