"""A sequence model with `staleness_buckets` reads a history as of the request's `now`
(default: the time of the request), through the client and over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from starlette.testclient import TestClient

from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.history import Interaction, TrainingHistories
from tests.retrieval.conftest import Data, sequence_recommender

DAY = 86400.0


@pytest.fixture(scope="module")
def stale_rec(data: Data, tmp_path_factory) -> Iterator[Recommender]:
    config = TwoTowerConfig(
        user_encoder="sequence", history=20, layers=1, heads=2, dim=16, hidden=32,
        features=False, epochs=1, val_fraction=0.0, device="cpu", staleness_buckets=24,
    )  # fmt: skip
    model: TwoTowerModel = fit_two_tower(data.ratings, None, None, config, progress=False)
    with torch.no_grad():  # a history older than about 11 days (bucket 15 on) leans on the prior
        model.user_tower.staleness.weight[15:, -1] = 20.0
        model.user_tower.staleness.weight[:15, -1] = -20.0
    rec = sequence_recommender(data, model, tmp_path_factory.mktemp("stale"))
    yield rec
    rec.close()


def test_now_changes_a_known_users_query(stale_rec, data):
    last = TrainingHistories(data.ratings).recent("7", 1)[0].timestamp
    assert last is not None
    fresh = stale_rec.recommend("7", 10, now=last + 60.0).hits.ids
    stale = stale_rec.recommend("7", 10, now=last + 365 * DAY).hits.ids
    assert fresh != stale
    # the default is the time of the request: years after MovieLens's 1998, as stale
    assert stale_rec.recommend("7", 10).hits.ids == stale
    batch = stale_rec.recommend_batch(["7", "7"], 10, now=[last + 60.0, None])
    assert [r.hits.ids for r in batch] == [fresh, stale]


def test_a_request_history_is_read_as_of_now(stale_rec):
    timed = [Interaction(i, 8.8e8 + 60 * n) for n, i in enumerate(["50", "181", "258"])]
    fresh = stale_rec.recommend(None, 10, history=timed, now=8.8e8 + 600).hits.ids
    assert fresh != stale_rec.recommend(None, 10, history=timed).hits.ids


def test_http_now(stale_rec, monkeypatch):
    monkeypatch.delenv("EMBEDREC_API_KEY", raising=False)
    body = {"history": [{"item_id": "50", "timestamp": 8.8e8}], "k": 5, "now": 8.8e8 + 60}
    with TestClient(create_app(stale_rec)) as client:
        got = client.post("/recommend", json=body)
        assert got.status_code == 200, got.text
        history = [Interaction("50", 8.8e8)]
        expected = stale_rec.recommend(None, 5, history=history, now=8.8e8 + 60).hits.ids
        assert [h["id"] for h in got.json()["results"]] == expected
        default = client.post("/recommend", json={**body, "now": None}).json()
        assert [h["id"] for h in default["results"]] != expected
