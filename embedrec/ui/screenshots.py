"""Start the app, open each page in a headless browser, and save a screenshot of each.

    python -m embedrec.ui.screenshots configs/serve.toml docs/screenshots [--results DIR]

Prints how long the app took from launch to the first recommendations on screen, and how
long each page took to render. The browser test runs the same code over its own fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from embedrec.ui.browser import Browser
from embedrec.ui.commands import streamlit_command
from embedrec.ui.settings import DEFAULT_RESULTS, UISettings

PAGE_TIMEOUT_S = 120.0
DONE = "results in"
"""What every query page's caption says once its results are on screen."""


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    ready: tuple[str, ...]
    """Any of these in the page text means it has finished rendering."""
    params: dict[str, str] = field(default_factory=dict)


def pages(query: str) -> list[Page]:
    return [
        Page("recommend", "Recommend", (DONE,)),
        Page("similar", "Similar items", (DONE,)),
        Page("search", "Search", (DONE,), {"q": query}),
        Page("stores", "Stores", ("Operating points", "No bench results")),
        Page("quality", "Quality", ("Cold start", "No leaderboard")),
    ]


@dataclass
class Shot:
    page: Page
    path: Path
    seconds: float
    text: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(settings: UISettings, env: dict[str, str] | None = None) -> Iterator[str]:
    """The app served on a free loopback port by its own process; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        streamlit_command("127.0.0.1", port),
        env={**os.environ, **settings.environ(), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with code {process.returncode}")
            if _healthy(url):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer on {url} within {PAGE_TIMEOUT_S} s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def shoot(browser: Browser, url: str, page: Page, out: Path) -> Shot:
    """Open `page`, wait until it has rendered, and save `out/<slug>.png`."""
    started = time.perf_counter()
    browser.goto(f"{url}/?{urlencode({'page': page.slug, **page.params})}")
    text = browser.wait_until(
        lambda t: page.title in t and any(r in t for r in page.ready),
        PAGE_TIMEOUT_S,
        f"the {page.title} page",
    )
    seconds = time.perf_counter() - started
    return Shot(page, browser.screenshot(out / f"{page.slug}.png"), seconds, text)


def take_all(
    settings: UISettings,
    out: Path,
    query: str,
    env: dict[str, str] | None = None,
    *,
    warm: bool = True,
) -> tuple[float, list[Shot]]:
    """(seconds from launching the app to recommendations on screen, one shot per page).
    `warm`: visit each later page once before its shot, so that the shot shows a steady
    query rather than the one that loaded the text or image model."""
    first, *rest = pages(query)
    with Browser() as browser:
        launched = time.perf_counter()
        with running_app(settings, env) as url:
            shots = [shoot(browser, url, first, out)]
            startup = time.perf_counter() - launched
            for page in rest:
                if warm:
                    shoot(browser, url, page, out)
                shots.append(shoot(browser, url, page, out))
    return startup, shots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--results", type=Path, action="append")
    parser.add_argument("--query", default="a horror film about vampires", help="the Search text")
    args = parser.parse_args(argv)
    results = tuple(p.resolve() for p in args.results or map(Path, DEFAULT_RESULTS))
    settings = UISettings(args.config.resolve(), None, results)
    start, shots = take_all(settings, args.out, args.query)
    print(f"app launch to recommendations on screen: {start:.1f} s")
    for shot in shots:
        print(f"{shot.page.title}: rendered in {shot.seconds:.2f} s -> {shot.path}")


if __name__ == "__main__":
    main()
