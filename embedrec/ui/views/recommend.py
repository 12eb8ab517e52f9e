"""Recommend: a user's highest-rated items beside what the two-tower recommends to them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from embedrec.ui import widgets
from embedrec.ui.context import Context
from embedrec.ui.users import FeatureInput

KNOWN, NEW = "A known user", "A new user (features only)"
NEW_USER_ID = "new-user"
HISTORY = 10


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
    who, knobs = st.columns([1, 1])
    with who:
        mode = st.radio("Who", [KNOWN, NEW], horizontal=True, key="rec-mode")
        features = None
        if mode == KNOWN:
            user_id = st.selectbox("User", ctx.users.user_ids, key="rec-user")
            shown = ctx.users.features_of(user_id)
            st.caption(" · ".join(f"{k}: {v}" for k, v in shown.items()))
        else:
            user_id = NEW_USER_ID
            features = {f.name: _feature_widget(f, "rec-new") for f in ctx.feature_inputs}
            if not features:
                features = None
                st.caption("The model declares no user features: a new user gets popular items.")
    with knobs:
        k = widgets.k_slider("rec")
        flt, error = widgets.filter_editor(ctx.catalogs.get("two-tower"), "rec")
    history, recommended = st.columns([2, 3]) if mode == KNOWN else (None, st.container())
    if history is not None:
        with history:
            _history(ctx, user_id)
    with recommended:
        st.subheader("Recommended")
        if error:
            st.error(error)
            return
        answer = widgets.run(
            "rec",
            (user_id, k, flt, features),
            lambda: ctx.backend.recommend(user_id, k, flt, features),
        )
        widgets.show_answer(answer, ctx.catalogs.get("two-tower"))
