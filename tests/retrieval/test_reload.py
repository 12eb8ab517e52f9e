"""The service follows its stores' aliases without a restart (#17 item 2): a swapped FAISS
alias is loaded with the model its store names, swapped in while requests run, the old
generation closed once its last request lets go; a failed reload keeps the old one serving;
`POST /admin/reload` needs the key; the drift gauges after a swap (#17 item 4)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedrec import open_store
from embedrec.data.movielens import load_movielens
from embedrec.embedders.two_tower import TwoTowerItemEmbedder, TwoTowerModel, fit_two_tower
from embedrec.ingestion.store_info import describe
from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import ServeConfig
from embedrec.retrieval.live_drift import GAUGES
from embedrec.retrieval.reload import Reloader
from embedrec.stores.errors import ConfigError
from embedrec.stores.info import EmbedderMismatch
from embedrec.stores.lifecycle.aliases import alias_book
from tests.retrieval.conftest import N_ITEMS, Data, serving
from tests.retrieval.test_client import heaviest_user


@dataclass
class Models:
    first: Path
    second: Path


@pytest.fixture(scope="module")
def models(data: Data, tmp_path_factory) -> Models:
    """The session's model and one trained the same way from another seed."""
    root = tmp_path_factory.mktemp("models")
    config = data.model.config.model_copy(update={"seed": 7})
    second = fit_two_tower(
        data.ratings, data.users, load_movielens().items, config, towers=data.model.towers,
        progress=False,
    )  # fmt: skip
    return Models(data.model.save(root / "first.pt"), second.save(root / "second.pt"))


def add_generation(alias: str, model: Path | str, data: Data) -> str:
    """A new generation of `alias`, swapped live: the catalog's item vectors under `model`,
    with the store info naming it (as `embedrec ingest` writes it)."""
    book = alias_book(alias)
    generation = book.new_generation()
    embedder = TwoTowerItemEmbedder(model)
    items = load_movielens().items.head(N_ITEMS)
    store = open_store(generation.uri, dim=embedder.dim, metric="cosine")
    describe(store, f"two-tower:{model}", embedder, None)
    store.upsert(data.item_ids, embedder.model.item_vectors(items), data.item_meta)
    store.close()
    book.swap(generation)
    return generation.name


def serve_config(tmp_path: Path, data: Data, **two_tower: object) -> ServeConfig:
    data.users.to_csv(tmp_path / "users.csv", index=False)
    data.ratings.to_parquet(tmp_path / "ratings.parquet")
    users = {"users": str(tmp_path / "users.csv"), "ratings": str(tmp_path / "ratings.parquet")}
    return ServeConfig.model_validate(
        {
            "server": {"reload_interval_s": 0, "drift_sample": 60},
            "two_tower": {"uri": f"faiss:{tmp_path}/items", **two_tower},
            "users": users,
        }
    )


@pytest.fixture
def served(data: Data, models: Models, tmp_path: Path) -> Iterator[tuple[Recommender, Reloader]]:
    """A recommender over the alias at generation g0001 (the first model), no model named in
    the config, and its reloader (no poll, no drift)."""
    config = serve_config(tmp_path, data)
    add_generation(config.two_tower.uri, models.first, data)  # type: ignore[union-attr]
    rec = Recommender.from_config(config)
    reloader = Reloader(rec, config)
    yield rec, reloader
    reloader.close()
    rec.close()


def watch_close(space) -> threading.Event:  # type: ignore[no-untyped-def]
    """Set when the space's stores are closed."""
    closed = threading.Event()
    close = space.failover.close

    def closing() -> None:
        closed.set()
        close()

    space.failover.close = closing
    return closed


def test_a_swap_is_served_without_restart_and_old_requests_finish_on_the_old_one(
    served, data, models
):
    rec, reloader = served
    user = heaviest_user(data)
    row = data.users[data.users["user_id"] == user]
    held = rec.space("two-tower")  # what a request under way holds
    assert held.generation == "g0001"
    closed = watch_close(held)
    add_generation(held.failover.primary.uri.rsplit("/", 1)[0], models.second, data)
    [outcome] = reloader.reload()
    assert (outcome.status, outcome.generation, outcome.previous) == ("reloaded", "g0002", "g0001")
    live = rec.space("two-tower")
    assert live.generation == "g0002" and live.failover.primary.uri.endswith("/g0002")
    second = TwoTowerModel.load(models.second)
    np.testing.assert_allclose(live.user_vectors[user], second.user_vectors(row)[0], rtol=1e-5)
    got = rec.recommend(user, 10)
    seen = frozenset(data.ratings.loc[data.ratings["user_id"] == user, "item_id"])
    direct = live.failover.primary.search(second.user_vectors(row), 10, exclude=[seen])[0]
    assert got.source == "two-tower" and list(got.hits.ids) == list(direct.ids)
    # the request that read the old space still answers from generation 1, until it lets go
    query = held.user_vectors[user][None]
    old = held.failover.call("search", lambda s: s.search(query, 10))
    assert len(old[0].ids) == 10 and list(old[0].ids) != list(got.hits.ids)
    time.sleep(0.3)
    assert not closed.is_set()
    del held, old
    assert closed.wait(5), "the replaced generation was not closed after its last request"
    assert [o.status for o in reloader.reload()] == ["unchanged"]


def test_requests_during_swaps_see_no_error(served, data, models):
    rec, reloader = served
    alias = rec.space("two-tower").failover.primary.uri.rsplit("/", 1)[0]
    users = data.users["user_id"].tolist()
    errors: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                res = rec.recommend(str(rng.choice(users)), 10)
                assert len(res.hits) == 10
                answered[0] += 1
            except BaseException as exc:  # any error fails the test below
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for model in (models.second, models.first, models.second):
        add_generation(alias, model, data)
        assert [o.status for o in reloader.reload()] == ["reloaded"]
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and answered[0] > 0
    assert rec.space("two-tower").generation == "g0004"


def test_a_failed_reload_keeps_the_old_generation_serving(
    served, data, models, tmp_path, monkeypatch
):
    rec, reloader = served
    alias = rec.space("two-tower").failover.primary.uri.rsplit("/", 1)[0]
    before = rec.recommend(heaviest_user(data), 10)
    gone = tmp_path / "gone.pt"
    (tmp_path / "gone.json").write_bytes(models.first.with_suffix(".json").read_bytes())
    gone.write_bytes(models.first.read_bytes())
    add_generation(alias, gone, data)
    gone.unlink()  # the model that generation names is no longer there
    [failed] = reloader.reload()
    assert failed.status == "failed" and failed.generation == "g0001"
    assert "FileNotFoundError" in failed.error and "gone.pt" in failed.error
    assert rec.recommend(heaviest_user(data), 10).hits.ids == before.hits.ids
    [again] = reloader.reload(retry_failed=False)  # the poll does not retry it at once
    assert again.status == "failed" and "not retried" in again.error
    monkeypatch.setattr("embedrec.retrieval.reload.RETRY_FAILED_S", 0.0)  # ... but later
    [later] = reloader.reload(retry_failed=False)
    assert later.status == "failed" and "FileNotFoundError" in later.error
    add_generation(alias, models.second, data)
    assert [o.generation for o in reloader.reload(retry_failed=False)] == ["g0003"]
    # the failure not retried is not counted again
    assert reloader.outcome_counts() == {("two-tower", "failed"): 2, ("two-tower", "reloaded"): 1}


def test_a_model_in_the_config_must_be_the_one_each_generation_names(data, models, tmp_path):
    config = serve_config(tmp_path, data, model=str(models.second))
    alias = config.two_tower.uri  # type: ignore[union-attr]
    add_generation(alias, models.first, data)
    with pytest.raises(EmbedderMismatch, match=r"second\.pt"):
        Recommender.from_config(config)
    add_generation(alias, models.second, data)
    rec = Recommender.from_config(config)
    reloader = Reloader(rec, config)
    add_generation(alias, models.first, data)
    [outcome] = reloader.reload()
    assert outcome.status == "failed" and "EmbedderMismatch" in outcome.error
    assert rec.space("two-tower").generation == "g0002"
    reloader.close()
    rec.close()


def test_a_store_that_does_not_name_its_model_needs_one_in_the_config(data, tmp_path):
    store = open_store(f"faiss:{tmp_path}/items", dim=data.item_vectors.shape[1])
    store.upsert(data.item_ids, data.item_vectors, data.item_meta)
    store.close()
    with pytest.raises(ConfigError, match=r"\[two_tower\] model: .* give the model file"):
        Recommender.from_config(serve_config(tmp_path, data))


def test_the_poll_follows_the_alias_and_an_injected_token_fails_safely(served, data, models):
    rec, _ = served
    config = serve_config(Path(rec.space("two-tower").failover.primary.uri[6:]).parents[1], data)
    polled = Reloader(rec, config)
    polled.start(0.05)
    alias = config.two_tower.uri  # type: ignore[union-attr]
    add_generation(alias, models.second, data)
    deadline = time.monotonic() + 30
    while rec.space("two-tower").generation != "g0002":
        assert time.monotonic() < deadline, "the poll did not load the swapped generation"
        time.sleep(0.05)
    polled.close()

    def broken(uri: str) -> str:
        raise OSError(f"cannot read the pointer of {uri}")

    [outcome] = Reloader(rec, config, token=broken).reload()
    assert outcome.status == "failed" and "cannot read the pointer" in outcome.error
    assert rec.space("two-tower").generation == "g0002"


def test_admin_reload_needs_the_key_and_answers_what_it_loaded(served, data, models, monkeypatch):
    rec, reloader = served
    alias = rec.space("two-tower").failover.primary.uri.rsplit("/", 1)[0]
    monkeypatch.delenv("EMBEDREC_API_KEY", raising=False)
    with (
        serving(create_app(rec, reloader=reloader)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        refused = c.post("/admin/reload")
        assert refused.status_code == 403 and "EMBEDREC_API_KEY" in refused.text
    with (
        serving(create_app(rec, api_key="s3cret", reloader=reloader)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        key = {"X-API-Key": "s3cret"}
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
        same = c.post("/admin/reload", headers=key)
        assert same.status_code == 200
        assert same.json() == {"spaces": {"two-tower": {"space": "two-tower",
                               "status": "unchanged", "generation": "g0001"}}}  # fmt: skip
        add_generation(alias, models.second, data)
        moved = c.post("/admin/reload", headers=key).json()["spaces"]["two-tower"]
        assert (moved["status"], moved["generation"], moved["previous"]) == (
            "reloaded", "g0002", "g0001",
        )  # fmt: skip
        health = c.get("/healthz", headers=key).json()
        assert health["spaces"]["two-tower"]["generation"] == "g0002"
        add_generation(alias, models.first, data)
        shutil.rmtree(f"{alias[len('faiss:') :]}/g0003")  # the live generation is gone
        failed = c.post("/admin/reload", headers=key)
        assert failed.status_code == 500
        answer = failed.json()["spaces"]["two-tower"]
        assert answer["status"] == "failed" and "g0003 holds no faiss store" in answer["error"]
        assert c.post("/recommend", json={"user_id": "1"}, headers=key).status_code == 200


def test_drift_gauges_after_a_swap(data, models, tmp_path):
    config = serve_config(tmp_path, data)
    alias = config.two_tower.uri  # type: ignore[union-attr]
    add_generation(alias, models.first, data)
    rec = Recommender.from_config(config)
    reloader = Reloader.for_service(rec, config)
    app = create_app(rec, api_key="k", reloader=reloader)
    add_generation(alias, models.first, data)  # the same model again: no drift at all
    last = reloader.drift()
    assert [o.status for o in reloader.reload()] == ["reloaded"]
    same = wait_for_drift(reloader, last)
    assert same["overlap_mean"] == same["neighbour_jaccard_mean"] == 1.0
    assert same["rank_correlation_mean"] == 1.0 and same["norm_shift"] == 0.0
    assert same["coverage_old"] == same["coverage_new"] and same["gini_old"] == same["gini_new"]
    add_generation(alias, models.second, data)
    last = reloader.drift()
    assert [o.status for o in reloader.reload()] == ["reloaded"]
    moved = wait_for_drift(reloader, last)
    assert 0 <= moved["overlap_mean"] < 1 and -1 <= moved["rank_correlation_mean"] < 1
    assert 0 <= moved["neighbour_jaccard_mean"] < 1 and moved["norm_shift"] >= 0
    for name in ("coverage_old", "coverage_new", "gini_old", "gini_new"):
        assert 0 < moved[name] < 1, name
    assert moved["sampled_users"] == 60
    with serving(app) as base:
        text = httpx.get(f"{base}/metrics", timeout=30).text
    for name in GAUGES:
        assert f'embedrec_drift_{name}{{space="two-tower"}}' in text, name
    assert 'embedrec_reloads_total{outcome="reloaded",space="two-tower"} 2.0' in text
    reloader.close()
    rec.close()


def test_drift_against_the_previous_generation_from_the_start(data, models, tmp_path):
    config = serve_config(tmp_path, data)
    alias = config.two_tower.uri  # type: ignore[union-attr]
    add_generation(alias, models.first, data)
    add_generation(alias, models.second, data)
    rec = Recommender.from_config(config)
    reloader = Reloader.for_service(rec, config)
    figures = wait_for_drift(reloader, None)
    assert 0 <= figures["overlap_mean"] < 1 and figures["sampled_users"] == 60
    assert rec.space("two-tower").generation == "g0002"
    reloader.close()
    rec.close()


def wait_for_drift(reloader: Reloader, last: dict | None) -> dict[str, float]:
    """The two-tower drift once a comparison newer than `last` is in (each one replaces the
    whole dict; None: any)."""
    deadline = time.monotonic() + 120
    while True:
        now = reloader.drift()
        if now is not last and "two-tower" in now:
            return now["two-tower"]
        assert time.monotonic() < deadline, "no drift figures after the swap"
        time.sleep(0.1)


def test_a_text_space_follows_its_alias_and_keeps_its_embedder(data, tmp_path):
    alias = f"faiss:{tmp_path}/text"
    book = alias_book(alias)
    for count in (len(data.item_ids), 50):  # g0002 holds only the first 50 items
        generation = book.new_generation()
        store = open_store(generation.uri, dim=data.text_vectors.shape[1], metric="cosine")
        describe(store, "text", data.text_embedder, None)
        store.upsert(data.item_ids[:count], data.text_vectors[:count], data.item_meta[:count])
        store.close()
        if count == len(data.item_ids):
            book.swap(generation)
    config = ServeConfig.model_validate({"text": {"uri": alias}})
    rec = Recommender.from_config(config)
    reloader = Reloader(rec, config)
    embedder = rec.text_embedder
    assert len(rec.search_text("space adventure", 100).hits) == 100
    book.swap(generation)
    assert [o.generation for o in reloader.reload()] == ["g0002"]
    assert rec.text_embedder is embedder  # the same model, by fingerprint: not loaded again
    hits = rec.search_text("space adventure", 100).hits
    assert len(hits) == 50 and set(hits.ids) <= set(data.item_ids[:50])
    reloader.close()
    rec.close()
