"""Recommendations from a history: the sequence encoder's users, a new user's history, ids
the store lacks, an empty history and one past the cap, through the client and over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.history import HISTORY_CAP, Interaction, TrainingHistories
from embedrec.retrieval.user_queries import HistoryTooLong
from tests.retrieval.conftest import Data, sequence_recommender

HISTORY = ["50", "181", "258", "100"]


class Live:
    """A `Histories` other than the training one: fixed events per user."""

    def __init__(self, events: dict[str, list[Interaction]]) -> None:
        self.events = events

    def recent(self, user_id: str, n: int) -> list[Interaction]:
        return self.events.get(user_id, [])[-n:]


def test_a_history_alone_drops_and_counts_unknown_ids(seq_rec):
    got = seq_rec.recommend(None, 10, history=[*HISTORY, "nope", "9999999"])
    assert got.source == "history" and got.unknown_history == 2
    assert len(got.hits) == 10 and not set(got.hits.ids) & set(HISTORY)
    timed = [Interaction(i, 8.8e8 + 60 * n) for n, i in enumerate(HISTORY)]
    assert seq_rec.recommend(None, 10, history=timed).hits.ids == got.hits.ids


def test_the_last_item_changes_the_recommendations(seq_rec):
    a = seq_rec.recommend(None, 10, history=HISTORY).hits.ids
    b = seq_rec.recommend(None, 10, history=[*HISTORY, "1"]).hits.ids
    assert a != b


def test_empty_history_is_a_new_user(seq_rec):
    got = seq_rec.recommend(None, 5, history=[])
    assert got.source == "popularity" and got.unknown_history == 0
    popular = [i for i, _ in seq_rec.interactions.popularity[:5]]
    assert got.hits.ids == popular
    features = {"age": 30, "gender": "F", "occupation": "writer"}
    assert seq_rec.recommend(None, 5, history=[], features=features).source == "features"


def test_over_long_history_is_refused(seq_rec):
    with pytest.raises(HistoryTooLong, match=f"at most {HISTORY_CAP}"):
        seq_rec.recommend("7", 5, history=["50"] * (HISTORY_CAP + 1))


def test_known_user_reads_stored_history_then_the_request(seq_rec, data):
    stored = TrainingHistories(data.ratings).recent("7", 20)
    plain = seq_rec.recommend("7", 10)
    assert plain.source == "two-tower"
    more = seq_rec.recommend("7", 10, history=["1", "2", "3"])
    assert more.source == "two-tower" and more.hits.ids != plain.hits.ids
    assert not {"1", "2", "3"} & set(more.hits.ids)
    seen = seq_rec.interactions.seen["7"]
    assert not seen & set(plain.hits.ids) and len(stored) == 20


def test_histories_come_from_the_given_source(data, sequence_model, tmp_path):
    events = [Interaction(i) for i in HISTORY]
    rec = sequence_recommender(
        data, sequence_model, tmp_path, histories=Live({"live-user": events})
    )
    try:
        live = rec.recommend("live-user", 10)
        alone = rec.recommend(None, 10, history=HISTORY)
        assert live.source == "two-tower" and live.hits.ids == alone.hits.ids
    finally:
        rec.close()


def test_static_model_takes_a_history_for_a_new_user(rec):
    got = rec.recommend(None, 5, history=[*HISTORY, "nope"])
    assert got.source == "history" and got.unknown_history == 1
    assert rec.recommend("7", 5, history=HISTORY).source == "two-tower"


@pytest.fixture(scope="module")
def rec(data: Data, tmp_path_factory) -> Iterator[Recommender]:
    from tests.retrieval.conftest import make_recommender

    recommender = make_recommender(data, tmp_path_factory.mktemp("static"))
    yield recommender
    recommender.close()


@pytest.fixture(scope="module")
def http(seq_rec, monkeypatch_module) -> Iterator[TestClient]:
    with TestClient(create_app(seq_rec)) as client:
        yield client


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMBEDREC_API_KEY", raising=False)
        yield mp


def test_http_history(http, seq_rec):
    body = {"history": [*HISTORY[:2], {"item_id": HISTORY[2], "timestamp": 8.8e8}, "nope"], "k": 5}
    got = http.post("/recommend", json=body)
    assert got.status_code == 200, got.text
    answer = got.json()
    assert answer["source"] == "history" and answer["unknown_history"] == 1
    expected = seq_rec.recommend(None, 5, history=HISTORY[:3]).hits.ids
    assert [h["id"] for h in answer["results"]] == expected
    empty = http.post("/recommend", json={"history": [], "k": 3}).json()
    assert empty["source"] == "popularity" and empty["unknown_history"] == 0
    known = http.post("/recommend", json={"user_id": "7", "history": ["1"]}).json()
    assert known["source"] == "two-tower"


def test_http_over_long_history_is_422(http):
    got = http.post("/recommend", json={"history": ["1"] * (HISTORY_CAP + 1)})
    assert got.status_code == 422 and "history" in got.text
    bad = http.post("/recommend", json={"history": [{"item_id": "1", "when": 3}]})
    assert bad.status_code == 422


def _reference(rec: Recommender, data: Data, user: str | None, history: list[str], k: int):
    """The answer spelled out: the tower over the stored then the request's items (their
    vectors as the store holds them), with a known user's row read from the user table, and
    exact cosine scores over every stored vector, the seen and history items left out."""
    model, store = rec.model, rec.space("two-tower").failover.primary
    records = {r.id: r for r in store.fetch(store.ids())}
    n = model.config.history
    stored = TrainingHistories(data.ratings).recent(user, n) if user is not None else []
    events = [e.item_id for e in stored if e.item_id in records]
    events += [i for i in history if i in records]
    events = events[-n:]
    vectors = np.array([records[i].vector for i in events], dtype=np.float32)
    row = None
    if user is not None:
        table = data.users.assign(user_id=data.users["user_id"].astype(str))
        row = pd.DataFrame([table.set_index("user_id", drop=False).loc[user].to_dict()])
    query = model.history_vectors([(vectors, np.full(len(events), np.nan))], row, 1e9)[0]
    ids = list(records)
    scores = np.array([records[i].vector for i in ids]) @ (query / np.linalg.norm(query))
    left_out = set(events) | set(history) | set(rec.interactions.seen.get(user or "", ()))
    ranked = [n for n in np.argsort(-scores, kind="stable") if ids[n] not in left_out][:k]
    return [ids[n] for n in ranked], scores[ranked]


def test_answers_match_the_computation_spelled_out(seq_rec, data):
    """History requests and known users, in one batch and alone: the served path (histories
    as `Events`, one store lookup per batch, excluded rows sharing a scan, an answer's
    metadata read together, users' rows kept as dicts) gives the reference's ids and
    scores, and each hit's metadata is its own record's."""
    calls = [(None, HISTORY), ("7", []), ("7", ["1", "2", "3"]), (None, ["5", "nope", "9"])]
    calls += [("42", HISTORY[:2])]
    batch = seq_rec.recommend_batch(
        [u for u, _ in calls], 10, history=[h for _, h in calls], now=[1e9] * len(calls)
    )
    store = seq_rec.space("two-tower").failover.primary
    for (user, history), got in zip(calls, batch, strict=True):
        alone = seq_rec.recommend(user, 10, history=history, now=1e9)
        ids, scores = _reference(seq_rec, data, user, history, 10)
        for answer in (got, alone):
            assert answer.hits.ids == ids
            np.testing.assert_allclose(answer.hits.scores, scores, rtol=1e-5, atol=1e-6)
            assert answer.hits.metadata == [r.metadata for r in store.fetch(ids)]
