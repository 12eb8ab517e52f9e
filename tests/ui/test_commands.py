"""`embedrec ui`: its options, and a bad config told on the command line, not in the page."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedrec.cli import build_parser, main
from embedrec.ui import commands
from embedrec.ui.settings import API_ENV, CONFIG_ENV, RESULTS_ENV, UISettings


def test_ui_parses_its_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "ui",
            "serve.toml",
            "--api",
            "http://h:1",
            "--results",
            "a",
            "--results",
            "b",
            "--port",
            "9",
        ]
    )
    assert (args.config, args.api, args.results, args.port) == (
        Path("serve.toml"), "http://h:1", [Path("a"), Path("b")], 9,
    )  # fmt: skip
    assert args.func is commands._ui


def test_settings_travel_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = UISettings(tmp_path / "serve.toml", "http://h:1", (tmp_path / "a", tmp_path / "b"))
    for key, value in settings.environ().items():
        monkeypatch.setenv(key, value)
    assert UISettings.from_env() == settings
    monkeypatch.delenv(API_ENV)
    monkeypatch.delenv(RESULTS_ENV)
    assert UISettings.from_env().api is None
    monkeypatch.delenv(CONFIG_ENV)
    with pytest.raises(ValueError, match=CONFIG_ENV):
        UISettings.from_env()


def test_a_bad_config_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "serve.toml"
    bad.write_text("[nonsense]\nx = 1\n")
    assert main(["ui", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embedrec ui: error:") and "nonsense" in err
    assert main(["ui", str(tmp_path / "missing.toml")]) == 2


def test_the_streamlit_command_serves_the_app_headless() -> None:
    command = commands.streamlit_command("127.0.0.1", 8599)
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert os.path.samefile(command[4], Path(commands.__file__).with_name("app.py"))
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.port"] == "8599" and options["--server.headless"] == "true"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_the_streamlit_server(tmp_path: Path) -> None:
    """A real `embedrec ui`, stopped as a service manager stops it: its Streamlit server stops
    listening and nothing of its process group is left. It used to leave Streamlit running."""
    config = tmp_path / "serve.toml"
    config.write_text(f'[text]\nuri = "faiss:{tmp_path / "none"}"\nembedder = "text"\n')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedrec = Path(sys.executable).with_name("embedrec")
    process = subprocess.Popen(
        [str(embedrec), "ui", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert process.poll() is None and time.monotonic() < deadline, "ui did not start"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert not _listening(port)
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # no process of the group is left
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
