"""Subcommands of this package, registered on the `embedrec` parser."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to `sub`."""
    serve = sub.add_parser(
        "serve",
        help="serve similar items, recommendations and search over HTTP",
        description="Serve the stores a config names (see configs/serve.toml) with FastAPI. "
        "Set EMBEDREC_API_KEY to require an API key on the data endpoints. "
        "OpenAPI docs at /docs, Prometheus metrics at /metrics.",
    )
    serve.add_argument("config", type=Path, help="a serve config (TOML)")
    serve.add_argument("--host", help="interface to bind (default: the config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the config's, 8000)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config

    log = logging.getLogger("embedrec.serve")
    config = load_serve_config(args.config)
    log.info(
        "opening %s",
        ", ".join(s for s in ("text", "image", "two_tower") if getattr(config, s) is not None),
    )
    recommender = Recommender.from_config(config)
    log.info("loading models")
    recommender.warmup()
    try:
        uvicorn.run(
            create_app(recommender),
            host=args.host or config.server.host,
            port=args.port if args.port is not None else config.server.port,
            access_log=config.server.access_log,
            log_level="info",
        )
    finally:
        recommender.close()
    return 0
