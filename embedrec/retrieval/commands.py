"""Subcommands of this package, registered on the `embedrec` parser."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to `sub`."""
    serve = sub.add_parser(
        "serve",
        help="serve similar items, recommendations and search over HTTP",
        description="Serve the stores a config names (see configs/serve.toml) with FastAPI. "
        "Set EMBEDREC_API_KEY to require an API key on the data endpoints (and to allow "
        "POST /admin/reload). A store that is an alias is followed: a swapped generation is "
        "loaded without a restart. OpenAPI docs at /docs, Prometheus metrics at /metrics.",
    )
    serve.add_argument("config", type=Path, help="a serve config (TOML)")
    serve.add_argument("--host", help="interface to bind (default: the config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the config's, 8000)")
    serve.add_argument(
        "--workers", type=int, help="server processes (default: the config's, 1); one per core"
    )
    serve.set_defaults(func=_serve)


CONFIG_ENV = "EMBEDREC_SERVE_CONFIG"


def app_from_env() -> Any:
    """The app over the config named by $EMBEDREC_SERVE_CONFIG: what each worker process of
    a multi-worker `embedrec serve` builds (uvicorn starts workers from an import string)."""
    # here, not at the top: FastAPI (the serve extra) and torch would slow `embedrec --help`
    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config
    from embedrec.retrieval.reload import Reloader

    config = load_serve_config(os.environ[CONFIG_ENV])
    recommender = Recommender.from_config(config)
    recommender.warmup()
    atexit.register(recommender.close)
    reloader = Reloader.for_service(recommender, config)
    atexit.register(reloader.close)  # registered last, so it runs first
    return create_app(recommender, reloader=reloader)


def _serve(args: argparse.Namespace) -> int:
    # here, not at the top: uvicorn and FastAPI (the serve extra), torch and pydantic would
    # slow `embedrec --help`, and an install without the serve extra still lists `serve`
    import uvicorn

    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config
    from embedrec.retrieval.reload import Reloader

    config = load_serve_config(args.config)
    workers = args.workers if args.workers is not None else config.server.workers
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    logging.getLogger("embedrec.serve").info(
        "serving %s with %d worker(s)",
        ", ".join(s for s in ("text", "image", "two_tower") if getattr(config, s) is not None),
        workers,
    )
    # Opened here first, so that a missing store or model is a one-line error rather than a
    # traceback from inside uvicorn's worker start.
    recommender = Recommender.from_config(config)
    options: dict[str, Any] = {
        "host": args.host or config.server.host,
        "port": args.port if args.port is not None else config.server.port,
        "access_log": config.server.access_log,
        "log_level": "info",
    }
    if workers == 1:
        recommender.warmup()
        reloader = Reloader.for_service(recommender, config)
        try:
            uvicorn.run(create_app(recommender, reloader=reloader), **options)
        finally:
            reloader.close()
            recommender.close()
        return 0
    recommender.close()
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    uvicorn.run(
        "embedrec.retrieval.commands:app_from_env", factory=True, workers=workers, **options
    )
    return 0
