"""`/recommend` calls that arrive together are answered as one `recommend_batch`
(`api/batching.py`): each answer is the one the request gets alone, and a bad request's
error reaches that request only."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from embedrec.retrieval.api import batching, create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.history import Interaction
from tests.retrieval.test_history_requests import HISTORY

FEATURES = {"age": 30, "gender": "F", "occupation": "writer"}
CALLS: list[dict[str, Any]] = [
    {"user_id": None, "history": HISTORY},
    {"user_id": "7", "history": None},
    {"user_id": "7", "history": ["1", "2", "3"]},
    {"user_id": None, "history": [*HISTORY[:2], "nope"], "features": FEATURES},
    {"user_id": None, "history": [], "features": FEATURES},
    {"user_id": None, "history": []},
    {"user_id": None, "history": ["nope"]},
    {"user_id": "42", "history": [Interaction("1", 8.8e8), Interaction("2", 8.8e8 + 600)]},
]


def _same(got, alone) -> None:
    assert (got.source, got.unknown_history) == (alone.source, alone.unknown_history)
    assert got.hits.ids == alone.hits.ids
    np.testing.assert_allclose(got.hits.scores, alone.hits.scores, rtol=1e-5, atol=1e-6)


def test_a_batch_answers_each_user_as_alone(seq_rec: Recommender):
    """The sequence tower encodes the batch's histories in one pass (those with a feature
    row apart from those without), and each user keeps their own answer."""
    got = seq_rec.recommend_batch(
        [c["user_id"] for c in CALLS],
        8,
        features=[c.get("features") for c in CALLS],
        history=[c["history"] for c in CALLS],
    )
    for call, answer in zip(CALLS, got, strict=True):
        alone = seq_rec.recommend(
            call["user_id"], 8, features=call.get("features"), history=call["history"]
        )
        _same(answer, alone)
    assert [a.source for a in got] == [
        "history", "two-tower", "two-tower", "history", "features", "popularity",
        "popularity", "two-tower",
    ]  # fmt: skip


def _post_together(rec: Recommender, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """The bodies posted at once, on one event loop, to the app over `rec`."""

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(rec))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))

    return asyncio.run(post_all())


@pytest.fixture
def batch_sizes(seq_rec: Recommender, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = seq_rec.recommend_batch

    def recording(user_ids, *args, **kw):
        sizes.append(len(user_ids))
        return real(user_ids, *args, **kw)

    monkeypatch.setattr(seq_rec, "recommend_batch", recording)
    monkeypatch.delenv("EMBEDREC_API_KEY", raising=False)
    return sizes


def test_requests_that_arrive_together_share_one_batch(seq_rec, batch_sizes):
    bodies = [{"history": HISTORY[n:], "k": 5} for n in range(3)] + [{"user_id": "7", "k": 5}]
    answers = _post_together(seq_rec, bodies)
    assert batch_sizes == [4]
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        alone = seq_rec.recommend(body.get("user_id"), 5, history=body.get("history"))
        assert [h["id"] for h in answer.json()["results"]] == alone.hits.ids
    batch_sizes.clear()
    other_k = _post_together(seq_rec, [{"history": HISTORY, "k": 3}, {"history": HISTORY}])
    assert [len(a.json()["results"]) for a in other_k] == [3, 10]
    assert batch_sizes == [1, 1]  # one batch per k


def test_a_bad_request_fails_alone(seq_rec, batch_sizes):
    """A feature the model does not declare is a 422 for its own request; the batch it came
    in is answered again call by call."""
    bodies = [{"history": HISTORY}, {"history": HISTORY, "features": {"shoe_size": 41}}]
    good, bad = _post_together(seq_rec, [*bodies, bodies[0]])[:2]
    assert good.status_code == 200 and bad.status_code == 422
    assert "shoe_size" in bad.text
    assert batch_sizes == [3, 1, 1, 1]


def test_batches_hold_at_most_max_batch(seq_rec, batch_sizes, monkeypatch):
    monkeypatch.setattr(batching, "MAX_BATCH", 2)
    answers = _post_together(seq_rec, [{"history": HISTORY[n:]} for n in range(3)])
    assert [a.status_code for a in answers] == [200] * 3
    assert batch_sizes == [2, 1]


def _post_staggered(rec: Recommender, bodies: list[dict[str, Any]], turns: int) -> list[int]:
    """The bodies posted `turns` turns of the event loop apart; their status codes."""

    async def post_all() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(rec))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def post(n: int, body: dict[str, Any]) -> int:
                for _ in range(n * turns):
                    await asyncio.sleep(0)
                return (await client.post("/recommend", json=body)).status_code

            return await asyncio.gather(*(post(n, b) for n, b in enumerate(bodies)))

    return asyncio.run(post_all())


def test_calls_that_keep_arriving_join_the_batch(seq_rec, batch_sizes):
    """A call that queues on the turn after another is answered with it (under load, the
    clients answered last send their next requests while the queue forms); a call after a
    turn with none waits for the next batch."""
    bodies = [{"history": HISTORY[n:]} for n in range(3)]
    assert _post_staggered(seq_rec, bodies, turns=1) == [200] * 3
    assert batch_sizes == [3]
    batch_sizes.clear()
    assert _post_staggered(seq_rec, bodies[:2], turns=batching.WAIT_TURNS + 4) == [200] * 2
    assert batch_sizes == [1, 1]
