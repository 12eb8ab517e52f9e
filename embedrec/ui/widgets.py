"""Widgets the pages share: the filter editor, a results view, and the answer's caption."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from embedrec.stores import Hit
from embedrec.ui.backend import Answer, QueryError
from embedrec.ui.catalog import DisplayCatalog, FieldSpec

TWO_TOWER = (
    "Two-tower: a model of two networks, one turning a user (ids, features) into a vector "
    "and one an item, trained on who chose what so that a user's vector scores highest the "
    "items they would choose."
)
"""What every page that shows two-tower answers says it means."""
THUMBNAIL_PX = 96
GRID_COLUMNS = 5
ANY = "any"


def k_slider(key: str, default: int = 10) -> int:
    return int(st.slider("k (results)", 1, 50, default, key=f"{key}-k"))


def _field_clause(spec: FieldSpec, key: str) -> dict[str, Any] | None:
    """One field's widget and the filter clause it adds (None: no constraint)."""
    widget_key = f"{key}-f-{spec.name}"
    if spec.kind in ("list", "str"):
        chosen = st.multiselect(f"{spec.name} (any of)", spec.options, key=widget_key)
        return {"$in": list(chosen)} if chosen else None
    if spec.kind == "bool":
        value = st.selectbox(spec.name, [ANY, "true", "false"], key=widget_key)
        return None if value == ANY else {"$eq": value == "true"}
    assert spec.low is not None and spec.high is not None
    if spec.low == spec.high:
        return None
    if spec.kind == "int":
        low, high = int(spec.low), int(spec.high)
    else:
        low, high = float(spec.low), float(spec.high)
    chosen_low, chosen_high = st.slider(
        f"{spec.name} range", low, high, (low, high), key=widget_key
    )
    clause: dict[str, Any] = {}
    if chosen_low > low:
        clause["$gte"] = chosen_low
    if chosen_high < high:
        clause["$lte"] = chosen_high
    return clause or None


def filter_editor(
    catalog: DisplayCatalog | None, key: str
) -> tuple[dict[str, Any] | None, str | None]:
    """A filter built from the catalog's metadata fields (a choice per list or string
    field, a range per number), or typed as JSON. Returns (filter, error)."""
    with st.expander("Filter", expanded=False):
        clauses = {}
        for spec in catalog.fields if catalog is not None else []:
            clause = _field_clause(spec, key)
            if clause is not None:
                clauses[spec.name] = clause
        raw = st.text_area(
            "or as JSON (replaces the fields above)",
            key=f"{key}-json",
            placeholder='{"field": {"$in": ["value"]}, "number": {"$gte": 1}}',
        )
    if raw.strip():
        try:
            value = json.loads(raw)
        except ValueError as exc:
            return None, f"The filter is not valid JSON: {exc}"
        if not isinstance(value, dict):
            return None, f"The filter must be a JSON object, not {type(value).__name__}"
        return value, None
    return (clauses or None), None


def run(key: str, inputs: tuple[Any, ...], query: Callable[[], Answer]) -> Answer | None:
    """The query's answer, or None after showing why it failed. The last answer for `key`
    is kept for the session: a rerun caused by another widget on the page (the other half
    of the Search page, say) shows it again rather than asking the model and store again."""
    answers = st.session_state.setdefault("answers", {})
    kept = answers.get(key)
    if kept is not None and kept[0] == inputs:
        return kept[1]
    try:
        answer = query()
    except QueryError as exc:
        answers.pop(key, None)
        st.error(str(exc))
        return None
    answers[key] = (inputs, answer)
    return answer


def caption(answer: Answer) -> None:
    st.caption(
        f"{len(answer.hits)} results in {answer.seconds * 1e3:.1f} ms · answered by "
        f"**{answer.source}** · store: **{answer.store}**"
    )


def cell(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def hits_frame(hits: Sequence[Hit], catalog: DisplayCatalog | None) -> pd.DataFrame:
    rows = []
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata
        if meta is None and catalog is not None:
            meta = catalog.metadata.get(hit.id)
        cells = {name: cell(v) for name, v in (meta or {}).items()}
        rows.append({"#": rank, "id": hit.id, "score": round(float(hit.score), 4), **cells})
    return pd.DataFrame(rows)


def show_hits(
    hits: Sequence[Hit], catalog: DisplayCatalog | None, columns: int = GRID_COLUMNS
) -> None:
    """Thumbnails where the catalog has images, else a table."""
    if not hits:
        st.info("No results: nothing matches (try a wider filter).")
        return
    if catalog is not None and catalog.images:
        grid = st.columns(columns)
        for n, hit in enumerate(hits):
            with grid[n % columns]:
                image = catalog.image(hit.id)
                if image is not None:
                    st.image(image, width=THUMBNAIL_PX)
                st.caption(f"{catalog.label(hit.id)} · {hit.score:.3f}")
        return
    st.dataframe(hits_frame(hits, catalog), hide_index=True, width="stretch")


def show_answer(answer: Answer | None, catalog: DisplayCatalog | None, columns: int = GRID_COLUMNS):
    if answer is None:
        return
    caption(answer)
    show_hits(answer.hits, catalog, columns)


def item_picker(catalog: DisplayCatalog, label: str, key: str) -> str | None:
    if not catalog.ids:
        st.info(f"The {catalog.space} store's items are not known here (no ingestion manifest).")
        return None
    return st.selectbox(label, catalog.ids, format_func=catalog.label, key=key)
