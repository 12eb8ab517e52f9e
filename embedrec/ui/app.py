"""The Streamlit script `embedrec ui` runs: a sidebar of pages over one shared context.

The page is chosen in the sidebar or by the URL (`?page=search`), so a page can be linked
to. The query pages share a `Context` kept in Streamlit's resource cache; Stores and
Quality read result files only, so they work while the stores are down. Nothing a page
raises reaches the browser as a traceback: it becomes a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st

from embedrec.stores import StoreError
from embedrec.ui.backend import QueryError
from embedrec.ui.context import Context, build_context
from embedrec.ui.settings import UISettings
from embedrec.ui.views import quality, recommend, search, similar, stores

log = logging.getLogger("embedrec.ui")

QUERY_PAGES: dict[str, Callable[[Context], None]] = {
    "Recommend": recommend.render,
    "Similar items": similar.render,
    "Search": search.render,
}
RESULT_PAGES = {"Stores": stores.render, "Quality": quality.render}
TITLES = [*QUERY_PAGES, *RESULT_PAGES]


def slug(title: str) -> str:
    return title.lower().split()[0]


@st.cache_resource(show_spinner="Opening the stores, the embedders and the model…")
def context(settings: UISettings) -> Context:
    return build_context(settings)


def _page_index() -> int:
    wanted = st.query_params.get("page", "")
    return next((n for n, t in enumerate(TITLES) if slug(t) == wanted), 0)


def main() -> None:
    st.set_page_config(page_title="embedrec", layout="wide")
    title = st.sidebar.radio("Page", TITLES, index=_page_index(), key="page")
    st.query_params["page"] = slug(title)
    st.title(title)
    try:
        settings = UISettings.from_env()
        if title in RESULT_PAGES:
            RESULT_PAGES[title](settings.results)
        else:
            QUERY_PAGES[title](context(settings))
    except QueryError as exc:
        st.error(str(exc))
    except (StoreError, ValueError, OSError) as exc:
        st.error(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the last guard: a message on the page, the traceback in the log
        log.exception("the %s page failed", title)
        st.error(f"The {title} page failed: {type(exc).__name__}: {exc}")


main()
