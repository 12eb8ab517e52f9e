"""The app in a real browser: Debian's chromium, headless, loads the running app, waits for
the Recommend page's results, checks each page's title in its text and saves a screenshot
of each page (the README's, when run over `make demo`'s data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.common.settings import CACHE_ENV
from embedrec.ui.browser import BROWSERS, find_browser
from embedrec.ui.screenshots import take_all
from embedrec.ui.settings import UISettings
from tests.ui.conftest import UIFiles

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_browser() is None,
        reason=f"no browser installed ({', '.join(BROWSERS)}); apt-get install chromium",
    ),
]


def test_every_page_renders_in_a_browser(ui_files: UIFiles, tmp_path: Path) -> None:
    settings = UISettings(ui_files.config, None, (ui_files.results,))
    startup, shots = take_all(
        settings, tmp_path, "space adventure", env={CACHE_ENV: str(ui_files.cache)}, warm=False
    )
    assert [s.page.title for s in shots] == [
        "Recommend", "Similar items", "Search", "Stores", "Quality",
    ]  # fmt: skip
    recommend = shots[0].text
    assert "Rated highest" in recommend and "Recommended" in recommend
    assert "answered by two-tower" in recommend and "store: primary" in recommend
    assert "Traceback" not in "".join(s.text for s in shots)
    assert "Operating points" in shots[3].text and "Cold start" in shots[4].text
    for shot in shots:
        assert shot.page.title in shot.text
        png = shot.path.read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert startup < 120
