"""A headless Chromium driven over the DevTools protocol: load a page, wait for its text,
take a screenshot. What the browser test and the README's screenshots use.

Only the standard library and `websockets` (which Streamlit already needs) are used, so no
browser-automation package is required; the browser is the system's (Debian's `chromium`).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1440, 1400)
STARTUP_S = 30.0

# Streamlit shows this while a script run is in progress
RUNNING = '!!document.querySelector("[data-testid=stStatusWidgetRunningIcon]")'
SETTLED = (
    "Array.from(document.images).every(i => i.complete)"
    " && !document.querySelector('[data-testid=stSkeleton]')"
)
"""Images loaded, and no placeholder left where a lazily loaded widget (a table, a slider)
is still to be drawn."""


class BrowserError(RuntimeError):
    """The browser did not start, or a page did not reach the awaited state in time."""


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Browser:
    """One headless browser tab; a context manager that closes the browser."""

    def __init__(self, executable: str | None = None, window: tuple[int, int] = WINDOW) -> None:
        # websockets is no embedrec dependency: only screenshots need it
        from websockets.sync.client import connect

        executable = executable or find_browser()
        if executable is None:
            raise BrowserError(f"no browser installed (looked for {', '.join(BROWSERS)})")
        self.profile = tempfile.TemporaryDirectory(prefix="embedrec-browser-")
        self._stack = contextlib.ExitStack()
        self.process = subprocess.Popen(
            [
                executable, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
                f"--window-size={window[0]},{window[1]}", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile.name}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers (zygote, renderers) share one group to stop
        )  # fmt: skip
        try:
            port = self._port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
                tabs = json.load(response)
            url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
            self.socket = self._stack.enter_context(
                connect(url, max_size=None, open_timeout=STARTUP_S)
            )
        except Exception:
            self.close()
            raise
        self._ids = itertools.count(1)
        self.send("Page.enable")
        width, height = window
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def _port(self) -> int:
        marker = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"the browser exited with code {self.process.returncode}")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise BrowserError(f"the browser opened no DevTools port within {STARTUP_S:.0f} s")

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command; events that arrive before its answer are dropped."""
        call = next(self._ids)
        self.socket.send(json.dumps({"id": call, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.socket.recv(timeout=STARTUP_S))
            if message.get("id") == call:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_until(self, done: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """Poll until `done(page text)` holds, no script run is in progress, images have
        loaded, and the text has stayed the same for two polls; returns the text."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            text = self.text()
            settled = not self.evaluate(RUNNING) and self.evaluate(SETTLED)
            if done(text) and settled and text == last:
                return text
            last = text
            time.sleep(0.25)
        raise BrowserError(f"the page did not show {what} within {timeout_s:.0f} s")

    def screenshot(self, path: Path) -> Path:
        shot = self.send("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Stop the browser and every helper process it started, then remove the profile.

        Chromium's helpers outlive the main process by a moment and keep writing into the
        profile, so the whole process group is stopped first and the removal is retried.
        """
        self._stack.close()
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)
        self.process.wait()
        for attempt in range(20):
            try:
                self.profile.cleanup()
                return
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.1)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
