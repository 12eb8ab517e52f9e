"""Shared by the Redis tests: a real redis-server on a free port (skipped, with the reason,
where none is installed), and a replay of events to compare live histories with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest
import redis

from embedrec.retrieval.events.histories import HistoryLimits, LiveHistories, MemoryHistories
from embedrec.retrieval.events.models import InteractionEvent
from embedrec.testing.redis_server import RedisServer, redis_server_binary


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: run scripts/setup-system.sh")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def xadd(client: redis.Redis, stream: str, events: Sequence[dict | bytes]) -> None:
    with client.pipeline() as pipe:
        for event in events:
            raw = event if isinstance(event, bytes) else orjson.dumps(event)
            pipe.xadd(stream, {"event": raw})
        pipe.execute()


def assert_replayed(
    live: LiveHistories, events: Sequence[dict], users: Sequence[str], limits: HistoryLimits
) -> None:
    """Each user's live history equals a replay of `events` (each once)."""
    replay = MemoryHistories(limits=limits)
    replay.add([InteractionEvent.model_validate(e) for e in events])
    for user in users:
        assert live.live(user) == replay.live(user), (user, live.live(user), replay.live(user))


def config_text(root: Path, url: str, tt_uri: str, model: Path, **stream: object) -> str:
    extra = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in stream.items())
    return (
        f'[two_tower]\nuri = "{tt_uri}"\nmodel = "{model}"\n\n'
        f'[users]\nusers = "{root / "users.csv"}"\nratings = "{root / "ratings.csv"}"\n\n'
        f'[stream]\nredis = "{url}"\n{extra}'
    )
