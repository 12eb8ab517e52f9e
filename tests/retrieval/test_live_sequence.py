"""Live histories under the sequence user encoder: a known user's vector is computed at
request time from their stored history followed by the events since, so one new interaction
moves it; with Redis down it comes from the stored history alone ("stored-vector")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import StreamConfig
from embedrec.retrieval.events.models import InteractionEvent
from embedrec.retrieval.live.service import Live
from embedrec.testing.redis_server import RedisServer, redis_server_binary
from tests.retrieval.conftest import Data, sequence_recommender


@pytest.fixture
def seq_rec(data: Data, sequence_model, tmp_path) -> Iterator[Recommender]:
    rec = sequence_recommender(data, sequence_model, tmp_path / "seq")
    yield rec
    rec.close()


def _event(n: int, user: str, item: str) -> dict:
    return {"event_id": f"q{n}", "user_id": user, "item_id": item, "timestamp": time.time()}


def test_an_event_moves_the_user_vector(seq_rec: Recommender, data: Data) -> None:
    user = str(data.users["user_id"].iloc[0])
    live = Live(seq_rec, StreamConfig(history_size=20), consume=False)
    before = seq_rec.recommend(user, 10, exclude_seen=False)
    assert before.source == "two-tower"
    unseen = [i for i in data.item_ids if i not in seq_rec.interactions.seen[user]]
    live.accept([_event(n, user, item) for n, item in enumerate(unseen[:3])])
    after = seq_rec.recommend(user, 10, exclude_seen=False)
    assert after.source == "two-tower"
    assert not np.allclose(before.hits.scores, after.hits.scores)  # a new vector
    assert [i.item_id for i in seq_rec.histories.recent(user, 20)][-3:] == unseen[:3]
    live.close()


def test_redis_down_answers_from_the_stored_history(
    seq_rec: Recommender, data: Data, tmp_path
) -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: run scripts/setup-system.sh")
    server = RedisServer(tmp_path / "redis").start()
    user = str(data.users["user_id"].iloc[0])
    stored = seq_rec.recommend(user, 10)
    live = Live(seq_rec, StreamConfig(redis=server.url, block_s=0.2), consume=False)
    try:
        item = next(i for i in data.item_ids if i not in seq_rec.interactions.seen[user])
        live.applier.apply([InteractionEvent.model_validate(_event(1, user, item))], "stream")
        moved = seq_rec.recommend(user, 10)
        assert moved.source == "two-tower" and moved.hits.ids != stored.hits.ids
        server.stop()
        down = seq_rec.recommend(user, 10)
        assert down.source == "stored-vector"
        assert down.hits.ids == stored.hits.ids
    finally:
        live.close()
        server.stop()
