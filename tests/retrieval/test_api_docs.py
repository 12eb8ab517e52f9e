"""/docs and /redoc render offline (issue 28): Swagger UI and ReDoc come from the package's
own files, not a CDN. Headless chromium loads each page from the running service, waits for
the operations to be listed, and checks that every file the page loaded came from the
service itself."""

from __future__ import annotations

import json

import httpx
import pytest

from embedrec.ui.browser import BROWSERS, Browser, find_browser

OPERATIONS = ("/similar", "/recommend", "/search", "/search/image")
RESOURCES = "JSON.stringify(performance.getEntriesByType('resource').map(e => e.name))"
DECORATION = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
"""ReDoc's "powered by" logo, an image it always asks its CDN for; offline it is left blank."""


def test_the_pages_point_at_the_packaged_files(client: httpx.Client) -> None:
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(path)
        assert page.status_code == 200 and f"/docs-assets/{asset}" in page.text
        assert "cdn" not in page.text and "fonts.googleapis" not in page.text
        script = client.get(f"/docs-assets/{asset}")
        assert script.status_code == 200 and len(script.content) > 500_000


@pytest.mark.slow
@pytest.mark.skipif(
    find_browser() is None,
    reason=f"no browser installed ({', '.join(BROWSERS)}); apt-get install chromium",
)
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_render_offline_in_a_browser(url: str, page: str) -> None:
    with Browser() as browser:
        browser.goto(f"{url}{page}")
        browser.wait_until(
            lambda t: all(op in t for op in OPERATIONS), 60, f"the operations on {page}"
        )
        loaded = json.loads(browser.evaluate(RESOURCES))
    assert loaded and all(name.startswith(url) for name in set(loaded) - DECORATION), loaded
