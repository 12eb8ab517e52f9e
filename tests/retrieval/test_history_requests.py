"""Recommendations from a history: the sequence encoder's users, a new user's history, ids
the store lacks, an empty history and one past the cap, through the client and over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

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
