"""Search: free text over the text space; an uploaded or catalog image over the image space."""

from __future__ import annotations

import streamlit as st

from embedrec.ui import widgets
from embedrec.ui.context import Context

UPLOAD, CATALOG = "Upload an image", "Pick from the catalog"


def _text(ctx: Context) -> None:
    st.subheader("Text")
    query = st.text_input("Search text", value=st.query_params.get("q", ""), key="search-q")
    k = widgets.k_slider("search-text")
    flt, error = widgets.filter_editor(ctx.catalogs.get("text"), "search-text")
    if error:
        st.error(error)
    elif query.strip():
        answer = widgets.run(
            "search-text", (query, k, flt), lambda: ctx.backend.search_text(query, k, flt)
        )
        widgets.show_answer(answer, ctx.catalogs.get("text"))


def _image(ctx: Context) -> None:
    st.subheader("Image")
    catalog = ctx.catalogs.get("image")
    sources = [UPLOAD, *([CATALOG] if catalog is not None and catalog.images else [])]
    how = st.radio(
        "Query image", sources, index=len(sources) - 1, horizontal=True, key="search-how"
    )
    image: bytes | None = None
    if how == UPLOAD:
        upload = st.file_uploader("Image file", type=["png", "jpg", "jpeg", "webp", "bmp"])
        image = upload.getvalue() if upload is not None else None
    else:
        assert catalog is not None
        with_images = [i for i in catalog.ids if i in catalog.images]
        item_id = st.selectbox(
            "Catalog image", with_images, format_func=catalog.label, key="search-img"
        )
        image = catalog.image(item_id) if item_id is not None else None
    if image is not None:
        st.image(image, width=widgets.THUMBNAIL_PX, caption="query")
    k = widgets.k_slider("search-image")
    flt, error = widgets.filter_editor(catalog, "search-image")
    if error:
        st.error(error)
    elif image is not None:
        answer = widgets.run(
            "search-image", (image, k, flt), lambda: ctx.backend.search_image(image, k, flt)
        )
        widgets.show_answer(answer, catalog)


ABOUT = (
    "Items nearest a text you type (over the text vectors: for the demo's movies, each "
    "embedded as its title, year and genres, so search by those) or an image you upload or "
    "pick (over the image vectors)."
)


def render(ctx: Context) -> None:
    st.caption(ABOUT)
    parts = [part for space, part in (("text", _text), ("image", _image)) if space in ctx.spaces]
    if not parts:
        st.info("Search needs a [text] or [image] space in the serve config.")
        return
    for column, part in zip(st.columns(len(parts)), parts, strict=True):
        with column:
            part(ctx)
