"""Subcommands of this package, registered on the `embedrec` parser."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
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
    stream = sub.add_parser(
        "stream",
        help="apply events from the Redis Stream that a serve config's [stream] names",
        description="A standalone consumer of the [stream] section's Redis Stream (see "
        "docs/realtime.md): reads events through the consumer group, applies them (users' "
        "histories in Redis, catalogue changes into the live generation of each store) and "
        "acknowledges them; a malformed event goes to the dead-letter stream STREAM:dead. "
        'Runs until interrupted. Needs [stream] redis = "redis://...".',
    )
    stream.add_argument("config", type=Path, help="a serve config (TOML) with a [stream] section")
    stream.add_argument(
        "--consumer", help="this consumer's name in the group (default: HOST-PID); a consumer "
        "restarted under its old name re-reads its own unacknowledged entries first",
    )  # fmt: skip
    stream.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: none)"
    )
    stream.set_defaults(func=_stream)


CONFIG_ENV = "EMBEDREC_SERVE_CONFIG"
WORKER_START_S = 60
"""How long a worker may take to answer uvicorn's health ping (its 5 s default kills a worker
that is still starting on a busy machine)."""


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
    live = _live(recommender, config.stream)
    if live is not None:
        atexit.register(live.close)
    reloader = Reloader.for_service(recommender, config)
    atexit.register(reloader.close)  # registered last, so it runs first
    return create_app(recommender, reloader=reloader, live=live)


def _live(recommender: Any, config: Any) -> Any:
    """The event path `[stream]` configures (None without one), its consumer started."""
    if config is None:
        return None
    from embedrec.retrieval.live.service import Live  # the serve extra (and redis)

    live = Live(recommender, config, consume=config.consume)
    live.start()
    return live


def _serve(args: argparse.Namespace) -> int:
    # here, not at the top: uvicorn and FastAPI (the serve extra), torch and pydantic would
    # slow `embedrec --help`, and an install without the serve extra still lists `serve`
    import uvicorn

    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.api.protocol import OneWriteHttp
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config
    from embedrec.retrieval.reload import Reloader

    config = load_serve_config(args.config)
    workers = args.workers if args.workers is not None else config.server.workers
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and config.stream is not None and config.stream.redis is None:
        raise ValueError(
            "[stream] without redis keeps users' histories in this process: serve it with one "
            'worker, or set [stream] redis = "redis://..." to share them'
        )
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
        "http": OneWriteHttp,  # each answer in one write to the socket, not two
    }
    if workers == 1:
        recommender.warmup()
        live = _live(recommender, config.stream)
        reloader = Reloader.for_service(recommender, config)
        try:
            uvicorn.run(create_app(recommender, reloader=reloader, live=live), **options)
        finally:
            reloader.close()
            if live is not None:
                live.close()
            recommender.close()
        return 0
    recommender.close()
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    uvicorn.run(
        "embedrec.retrieval.commands:app_from_env",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_START_S,
        **options,
    )
    return 0


def _stream(args: argparse.Namespace) -> int:
    # here, not at the top: redis, torch and the stores would slow `embedrec --help`
    import signal
    import threading

    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import load_serve_config
    from embedrec.retrieval.live.service import Live

    config = load_serve_config(args.config)
    if config.stream is None or config.stream.redis is None:
        raise ValueError(f'{args.config}: embedrec stream needs [stream] redis = "redis://..."')
    recommender = Recommender.from_config(config)
    live = Live(recommender, config.stream, consume=True, consumer=args.consumer)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server  # the serve extra, only when asked

        start_http_server(args.metrics_port, registry=live.stats.registry)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    assert live.consumer is not None
    print(
        f"embedrec stream: consuming {config.stream.stream} as {live.consumer.name} in group "
        f"{config.stream.group}",
        file=sys.stderr,
        flush=True,
    )
    try:
        live.consumer.run(stop)
    finally:
        live.close()
        recommender.close()
    return 0
