"""The embedded default (no Redis): `POST /events` applies events in this process; a user's
recommendations reflect their new interactions, a catalogue event makes an item
recommendable and searchable, and /metrics counts it all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from embedrec.ingestion.manifest import LiveEdits
from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import StreamConfig
from embedrec.retrieval.events.models import parse_event
from embedrec.retrieval.failover import Failover
from embedrec.retrieval.live.service import Live
from embedrec.stores import open_existing
from embedrec.stores.lifecycle.aliases import alias_book
from tests.retrieval.conftest import (
    Data,
    backend_param,
    build_store,
    make_recommender,
    serving,
    store_uri,
)


@pytest.fixture(scope="module")
def live_rec(data: Data, tmp_path_factory) -> Iterator[tuple[Recommender, Live]]:
    recommender = make_recommender(data, tmp_path_factory.mktemp("live"))
    live = Live(recommender, StreamConfig(history_size=5), consume=False)
    yield recommender, live
    live.close()
    recommender.close()


@pytest.fixture(scope="module")
def http(live_rec: tuple[Recommender, Live]) -> Iterator[httpx.Client]:
    recommender, live = live_rec
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMBEDREC_API_KEY", raising=False)
        app = create_app(recommender, live=live)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        yield c


def _interaction(n: int, user: str, item: str) -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "user_id": user, "item_id": item, "timestamp": time.time()}


def _ids(client: httpx.Client, user: str, k: int = 10) -> tuple[list[str], str]:
    body = client.post("/recommend", json={"user_id": user, "k": k}).json()
    return [h["id"] for h in body["results"]], body["source"]


def test_an_interaction_changes_the_recommendations(http: httpx.Client, data: Data) -> None:
    user = str(data.users["user_id"].iloc[0])
    before, source = _ids(http, user)
    assert source == "two-tower"
    answer = http.post("/events", json={"events": [_interaction(1, user, before[0])]})
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1, "rejected": 0, "rejections": []}
    after, _ = _ids(http, user)
    assert before[0] not in after  # seen now: left out
    assert after[:9] == before[1:10]
    again = http.post("/events", json={"events": [_interaction(1, user, before[1])]})
    assert again.status_code == 202  # the same event id again: no effect
    assert _ids(http, user)[0] == after


def test_rejections_name_event_and_reason(http: httpx.Client) -> None:
    events = [
        {"event_id": "bad-1", "user_id": "1"},
        _interaction(2, "1", "1"),
        {"event_id": "bad-2", "user_id": "1", "item_id": "1", "timestamp": "noon"},
    ]
    body = http.post("/events", json={"events": events}).json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    first, second = body["rejections"]
    assert (first["index"], first["event_id"]) == (0, "bad-1") and "item_id" in first["reason"]
    assert (second["index"], second["event_id"]) == (2, "bad-2")


def test_batch_cap(http: httpx.Client) -> None:
    events = [_interaction(n, "1", "1") for n in range(1001)]
    assert http.post("/events", json={"events": events}).status_code == 422


def test_unknown_item_waits_for_the_catalogue(
    http: httpx.Client, live_rec: tuple[Recommender, Live], data: Data
) -> None:
    recommender, live = live_rec
    user = str(data.users["user_id"].iloc[1])
    held = http.post("/events", json={"events": [_interaction(10, user, "new-film")]})
    assert held.json()["accepted"] == 1
    assert "new-film" not in [i.item_id for i in live.histories.live(user)]
    fields = dict(data.item_meta[0])
    added = {
        "event_id": "cat-1", "op": "added", "item_id": "new-film", "fields": fields,
        "text": "A brand new space documentary about Saturn's moons",
    }  # fmt: skip
    assert http.post("/events", json={"events": [added]}).json()["accepted"] == 1
    assert "new-film" in [i.item_id for i in live.histories.live(user)]
    found = http.post("/search", json={"text": "documentary about the moons of Saturn", "k": 3})
    assert "new-film" in [h["id"] for h in found.json()["results"]]
    similar = http.post("/similar", json={"item_id": "new-film", "k": 3})
    assert similar.status_code == 200
    store = recommender.space("text").failover.primary
    with closing(LiveEdits.of(store.uri)) as edits:
        assert edits.ops(["new-film"]) == {"new-film": "added"}
    removed = {"event_id": "cat-2", "op": "removed", "item_id": "new-film"}
    assert http.post("/events", json={"events": [removed]}).json()["accepted"] == 1
    found = http.post("/search", json={"text": "documentary about the moons of Saturn", "k": 3})
    assert "new-film" not in [h["id"] for h in found.json()["results"]]


def test_metrics(http: httpx.Client, data: Data) -> None:
    user = str(data.users["user_id"].iloc[2])
    http.post("/events", json={"events": [_interaction(20, user, data.item_ids[5])]})
    http.post("/recommend", json={"user_id": user})
    text = http.get("/metrics").text
    assert 'embedrec_events_consumed_total{kind="interaction",source="http"}' in text
    assert 'embedrec_events_rejected_total{reason="invalid"}' in text
    assert "embedrec_events_unknown_item_total 1.0" in text
    assert "embedrec_event_freshness_seconds_count" in text
    assert "embedrec_events_apply_seconds_bucket" in text


def test_demo_step(data: Data, tmp_path, capsys) -> None:
    """`make demo`'s live step (through Redis where redis-server is installed)."""
    from embedrec import demo

    recommender = make_recommender(data, tmp_path / "stores")
    try:
        demo.live_tour(recommender, tmp_path)
        assert recommender.space("text").failover.primary.count() == len(data.item_ids)
    finally:
        recommender.close()
    out = capsys.readouterr().out
    assert "recommend('1', 5) after" in out and "Saturn Rising" in out


def test_live_history_route_and_the_web_apps_backend(http: httpx.Client, data: Data) -> None:
    from embedrec.ui.backend import Service

    user = str(data.users["user_id"].iloc[4])
    item = data.item_ids[7]
    http.post("/events", json={"events": [_interaction(30, user, item)]})
    body = http.post("/history", json={"user_id": user}).json()
    assert body["available"] is True
    assert [e["item_id"] for e in body["live"]] == [item]
    backend = Service(str(http.base_url), ["two-tower"], "two-tower")
    found = backend.live_history(user)
    assert found is not None and found.available and [i for i, _ in found.entries] == [item]


def test_events_need_the_api_key(live_rec: tuple[Recommender, Live]) -> None:
    from starlette.testclient import TestClient

    recommender, live = live_rec
    with TestClient(create_app(recommender, api_key="secret", live=live)) as c:
        body = {"events": [_interaction(40, "1", "1")]}
        assert c.post("/events", json=body).status_code == 401
        assert c.post("/history", json={"user_id": "1"}).status_code == 401
        keyed = c.post("/events", json=body, headers={"X-API-Key": "secret"})
        assert keyed.status_code == 202


def test_a_catalogue_event_an_embedder_refuses(http: httpx.Client, data: Data) -> None:
    event = {"event_id": "cat-bad", "op": "added", "item_id": "blank", "text": "   ",
             "fields": dict(data.item_meta[1])}  # fmt: skip
    body = http.post("/events", json={"events": [event]}).json()
    assert body["accepted"] == 0 and body["rejected"] == 1
    rejection = body["rejections"][0]
    assert rejection["event_id"] == "cat-bad" and "text space" in rejection["reason"]
    found = http.post("/similar", json={"item_id": "blank", "space": "two-tower"})
    assert found.status_code == 404  # refused by one space: written to none
    assert 'embedrec_events_rejected_total{reason="apply"}' in http.get("/metrics").text


@pytest.mark.parametrize("backend", [backend_param("faiss"), backend_param("qdrant+edge")])
def test_a_writer_whose_alias_moved_writes_the_new_generation_too(
    data: Data, tmp_path, backend: str
) -> None:
    """A rebuild swapped the alias after its last replay, while this process still serves
    the old generation: the catalogue event lands in the old one and in the one now live."""
    alias = store_uri(backend, tmp_path / "alias")
    book = alias_book(alias)
    old, new = book.generation("g0001"), book.generation("g0002")
    for generation in (old, new):
        build_store(generation.uri, data.item_ids, data.item_vectors, data.item_meta).close()
    book.swap(old)
    serving_old = open_existing(alias)  # as the service opened it
    recommender = make_recommender(data, tmp_path, two_tower=Failover("two-tower", serving_old))
    book.swap(new)  # the rebuild's swap; the service has not reloaded yet
    live = Live(recommender, StreamConfig(), consume=False)
    event = {"event_id": "moved-1", "op": "added", "item_id": "moved-film",
             "fields": dict(data.item_meta[0])}  # fmt: skip
    assert live.accept([event]).accepted == 1
    assert [r.id for r in serving_old.fetch(["moved-film"])] == ["moved-film"]
    with open_existing(new.uri) as store:  # an edge shard has one opener: the writer let go
        assert [r.id for r in store.fetch(["moved-film"])] == ["moved-film"]
    for generation in (old, new):
        with closing(LiveEdits.of(generation.uri)) as edits:
            assert edits.all() == {"moved-film": "added"}
    live.close()
    recommender.close()


def test_an_item_another_process_removed_is_known_no_longer(data: Data, tmp_path) -> None:
    """The consumer remembers which items the catalogue holds for `refresh_s` only: a removal
    it did not apply itself (another process's) holds the next interaction with that item."""
    recommender = make_recommender(data, tmp_path)
    live = Live(recommender, StreamConfig(refresh_s=0.05), consume=False)
    user, item = str(data.users["user_id"].iloc[2]), data.item_ids[3]
    first = live.applier.apply([parse_event(_interaction(1, user, item))], "api")
    assert first.new == 1 and first.held == 0
    recommender.space("two-tower").failover.primary.delete([item])  # not by an event
    time.sleep(0.1)
    second = live.applier.apply([parse_event(_interaction(2, user, item))], "api")
    assert second.new == 0 and second.held == 1
    live.close()
    recommender.close()
