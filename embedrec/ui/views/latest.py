"""The results file a page shows: one of those found under the result folders, newest first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st

from embedrec.ui.results import ResultsError, find

T = TypeVar("T")


def pick_file(
    results: tuple[Path, ...], name: str, load: Callable[[Path], T], label: str, none_found: str
) -> tuple[Path, T] | None:
    """The chosen file called `name` and what `load` reads from it. None when there is no such
    file (the page shows `none_found`, its `{}` filled with the folders looked in) or when it
    cannot be read (the page shows why)."""
    found = find(results, name)
    if not found:
        st.info(none_found.format(", ".join(map(str, results))))
        return None
    path = st.selectbox(label, found, format_func=lambda p: str(p.parent))
    try:
        return path, load(path)
    except ResultsError as exc:
        st.error(str(exc))
        return None
