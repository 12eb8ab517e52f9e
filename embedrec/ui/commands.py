"""`embedrec ui CONFIG`: the Streamlit demo app over a serve config."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser(
        "ui",
        help="the web app: recommendations, similar items, search, store and quality results",
        description="Start the Streamlit app over the stores a serve config names (see "
        "configs/serve.toml): in process, or against a running `embedrec serve` with --api "
        "(the API key comes from EMBEDREC_API_KEY). Needs the `ui` extra.",
    )
    ui.add_argument("config", type=Path, help="a serve config (TOML)")
    ui.add_argument("--api", metavar="URL", help="query this `embedrec serve` instead")
    ui.add_argument(
        "--results",
        type=Path,
        action="append",
        metavar="DIR",
        help="where bench and leaderboard results are looked for (repeatable; default: "
        "data/demo, bench-out, runs)",
    )
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    ui.set_defaults(func=_ui)


def streamlit_command(host: str, port: int) -> list[str]:
    """The command that serves the app headless on host:port."""
    app = Path(__file__).with_name("app.py")
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def _ui(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading pydantic and the stores
    from embedrec.retrieval.config import load_serve_config
    from embedrec.ui.settings import DEFAULT_RESULTS, UISettings

    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise ValueError("the web app needs Streamlit: pip install 'embedrec[ui]'") from None
    load_serve_config(args.config)  # a bad config is a one-line error here, not in the page
    results = tuple(args.results or (Path(p) for p in DEFAULT_RESULTS))
    settings = UISettings(args.config.resolve(), args.api, tuple(p.resolve() for p in results))
    print(f"embedrec ui: http://{args.host}:{args.port}", flush=True)
    env = {**os.environ, **settings.environ()}
    # exec, not a child: SIGTERM, SIGINT and SIGHUP then reach Streamlit itself (a child
    # kept serving after its parent was stopped), and its exit status is the command's
    command = streamlit_command(args.host, args.port)
    os.execve(command[0], command, env)
