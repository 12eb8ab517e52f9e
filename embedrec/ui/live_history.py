"""A user's live history: the interactions that arrived as events since training
(docs/realtime.md), shown beside what they rated, where the service takes live events."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from embedrec.ui import widgets
from embedrec.ui.backend import QueryError
from embedrec.ui.context import Context


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def render(ctx: Context, user_id: str) -> None:
    try:
        found = ctx.backend.live_history(user_id)
    except QueryError as exc:
        st.error(str(exc))
        return
    if found is None:
        return
    st.subheader("Live history")
    if not found.available:
        st.warning("The live histories cannot be read now (Redis is down): recommendations "
                   "come from the stored vectors.")  # fmt: skip
        return
    if not found.entries:
        st.caption("No events since training.")
        return
    catalog = ctx.catalogs.get("two-tower")
    rows = [
        {"item_id": item, "at (UTC)": _when(ts)}
        | {
            k: widgets.cell(v)
            for k, v in (catalog.metadata.get(item, {}) if catalog else {}).items()
        }
        for item, ts in reversed(found.entries)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
