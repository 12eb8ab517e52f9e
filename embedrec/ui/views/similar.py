"""Similar items: one item's neighbours in each configured space, side by side, so content
similarity (text, image) and collaborative similarity (two-tower) can be compared."""

from __future__ import annotations

import streamlit as st

from embedrec.ui import widgets
from embedrec.ui.context import Context

ABOUT = (
    "One item's nearest neighbours in each vector space side by side: what its text or image "
    f"looks like (content) against who chose it (collaborative, two-tower). {widgets.TWO_TOWER}"
)


def render(ctx: Context) -> None:
    st.caption(ABOUT)
    with_items = [s for s in ctx.spaces if ctx.catalogs[s].ids]
    if not with_items:
        st.info("No space's items are known here: ingest a catalog with `embedrec ingest`.")
        return
    default = (
        with_items.index(ctx.backend.similar_space)
        if ctx.backend.similar_space in with_items
        else 0
    )
    pick, controls = st.columns([1, 1])
    with pick:
        space = st.radio(
            "Pick from the items of", with_items, index=default, horizontal=True, key="sim-space"
        )
        catalog = ctx.catalogs[space]
        item_id = widgets.item_picker(catalog, "Item", key=f"sim-item-{space}")
        image = catalog.image(item_id) if item_id is not None else None
        if image is not None:
            st.image(image, width=widgets.THUMBNAIL_PX)
    with controls:
        k = widgets.k_slider("sim")
        flt, error = widgets.filter_editor(catalog, "sim")
    if item_id is None:
        return
    if error:
        st.error(error)
        return
    spaces = [s for s in ctx.spaces if item_id in ctx.catalogs[s].metadata]
    for column, name in zip(st.columns(len(spaces)), spaces, strict=True):
        with column:
            st.subheader(name)
            answer = widgets.run(
                f"sim-{name}",
                (item_id, k, flt),
                lambda name=name: ctx.backend.similar(item_id, k, name, flt),
            )
            widgets.show_answer(answer, ctx.catalogs[name], columns=3)
