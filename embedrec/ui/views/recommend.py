"""Recommend: a user's highest-rated items beside what the two-tower recommends to them; a
new user's features; or a history a person builds by clicking items, the recommendations
following each click (`history` of `Recommender.recommend`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from embedrec.ui import live_history, widgets
from embedrec.ui.context import Context
from embedrec.ui.users import FeatureInput

KNOWN, NEW, CLICKS = "A known user", "A new user (features only)", "A history (click items)"
NEW_USER_ID = "new-user"
HISTORY = 10
CLICKED = "rec-history"
"""Session state: the item ids clicked so far, oldest first."""


def _click(item_id: str) -> None:
    st.session_state[CLICKED] = [*st.session_state.get(CLICKED, []), item_id]


def _history_builder(ctx: Context) -> list[str]:
    """The clicked history: an item picker with Add, the items so far, and Clear."""
    catalog = ctx.catalogs.get("two-tower")
    clicked: list[str] = st.session_state.setdefault(CLICKED, [])
    if catalog is not None:
        picked = widgets.item_picker(catalog, "Item", "rec-pick")
        if picked is not None:
            st.button("Add to history", key="rec-add", on_click=_click, args=(picked,))
    label = catalog.label if catalog is not None else str
    if clicked:
        st.caption("History, oldest first: " + " → ".join(label(i) for i in clicked))
        st.button("Clear", key="rec-clear", on_click=st.session_state.pop, args=(CLICKED,))
    else:
        st.caption("No items yet: add one, or click a recommendation below.")
    return list(clicked)


def _clickable(ctx: Context, answer: Any) -> None:
    """Each recommended item as a button that appends it to the history."""
    if answer is None or not len(answer.hits):
        return
    catalog = ctx.catalogs.get("two-tower")
    st.caption("Click an item to add it to the history:")
    grid = st.columns(widgets.GRID_COLUMNS)
    for n, hit in enumerate(answer.hits):
        name = catalog.label(hit.id) if catalog is not None else hit.id
        with grid[n % len(grid)]:
            st.button(name, key=f"rec-click-{hit.id}", on_click=_click, args=(hit.id,))


def _feature_widget(field: FeatureInput, key: str) -> Any:
    label, wkey = field.name, f"{key}-{field.name}"
    if field.kind == "number":
        low, high = field.low or 0, field.high or 0
        if field.integer:
            return int(
                st.number_input(label, int(low), int(high), int((low + high) // 2), key=wkey)
            )
        return float(st.number_input(label, float(low), float(high), key=wkey))
    if field.kind == "choice":
        return st.selectbox(label, field.options, key=wkey)
    if field.kind == "multi":
        return st.multiselect(label, field.options, key=wkey)
    return st.text_input(label, key=wkey)


def _history(ctx: Context, user_id: str) -> None:
    assert ctx.users is not None
    st.subheader("Rated highest")
    top = ctx.users.top_rated(user_id, HISTORY)
    if top.empty:
        st.info("No ratings: recommendations come from the features or popularity.")
        return
    catalog = ctx.catalogs.get("two-tower")
    meta = pd.DataFrame(
        [
            {
                k: widgets.cell(v)
                for k, v in (catalog.metadata.get(i, {}) if catalog else {}).items()
            }
            for i in top["item_id"]
        ]
    )
    st.dataframe(pd.concat([top, meta], axis=1), hide_index=True, width="stretch")


ABOUT = (
    "A user's highest-rated items beside the two-tower's recommendations for them (items "
    f"they rated left out), or a new user's from their features alone. {widgets.TWO_TOWER}"
)


def render(ctx: Context) -> None:
    st.caption(ABOUT)
    if "two-tower" not in ctx.backend.spaces or ctx.users is None:
        st.info("Recommendations need a [two_tower] space and [users] in the serve config.")
        return
    who, controls = st.columns([1, 1])
    with who:
        mode = st.radio("Who", [KNOWN, NEW, CLICKS], horizontal=True, key="rec-mode")
        features, clicked = None, None
        if mode == CLICKS:
            user_id, clicked = None, _history_builder(ctx)
        elif mode == KNOWN:
            user_id = st.selectbox("User", ctx.users.user_ids, key="rec-user")
            shown = ctx.users.features_of(user_id)
            st.caption(" · ".join(f"{k}: {v}" for k, v in shown.items()))
        else:
            user_id = NEW_USER_ID
            features = {f.name: _feature_widget(f, "rec-new") for f in ctx.feature_inputs}
            if not features:
                features = None
                st.caption("The model declares no user features: a new user gets popular items.")
    with controls:
        k = widgets.k_slider("rec")
        flt, error = widgets.filter_editor(ctx.catalogs.get("two-tower"), "rec")
    history, recommended = st.columns([2, 3]) if mode == KNOWN else (None, st.container())
    if history is not None:
        with history:
            _history(ctx, user_id)
            live_history.render(ctx, user_id)
    with recommended:
        st.subheader("Recommended")
        if error:
            st.error(error)
            return
        answer = widgets.run(
            "rec",
            (user_id, k, flt, features, clicked),
            lambda: ctx.backend.recommend(user_id, k, flt, features, clicked),
        )
        widgets.show_answer(answer, ctx.catalogs.get("two-tower"))
        if mode == CLICKS:
            _clickable(ctx, answer)
