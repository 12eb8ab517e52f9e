"""The Recommender on FAISS and qdrant+edge over real MovieLens / Fashion-MNIST vectors,
checked against brute force; failover with a fault-injecting store."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedrec import FilterError, StoreUnavailable, matches
from embedrec.retrieval.client import (
    Failover,
    ItemNotFound,
    Recommender,
    Results,
    SpaceNotConfigured,
)
from embedrec.stores import ConfigError, StoreLocked, StoreNotFound, open_store
from embedrec.stores.errors import CorruptStore, DimensionError
from tests.retrieval.conftest import (
    Data,
    FaultyStore,
    backend_param,
    build_store,
    make_recommender,
)

BACKENDS = [backend_param("faiss"), backend_param("qdrant+edge")]


@pytest.fixture(scope="module", params=BACKENDS)
def rec(request, data: Data, tmp_path_factory) -> Recommender:
    recommender = make_recommender(data, tmp_path_factory.mktemp("stores"), request.param)
    yield recommender
    recommender.close()


def brute(
    vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, exclude=(), keep=None
) -> list[str]:
    scores = vectors @ (query / np.linalg.norm(query))
    order = [ids[i] for i in np.argsort(-scores, kind="stable")]
    return [i for i in order if i not in set(exclude) and (keep is None or keep(i))][:k]


def assert_same(batch: list[Results], single: list[Results]) -> None:
    assert [[h.id for h in r.hits] for r in batch] == [[h.id for h in r.hits] for r in single]
    for a, b in zip(batch, single, strict=True):
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-5)


def heaviest_user(data: Data) -> str:
    in_catalog = data.ratings[data.ratings["item_id"].isin(set(data.item_ids))]
    return str(in_catalog["user_id"].value_counts().idxmax())


def seen_in_catalog(data: Data, user: str) -> set[str]:
    rated = set(data.ratings.loc[data.ratings["user_id"] == user, "item_id"])
    return rated & set(data.item_ids)


def test_similar_leaves_the_item_out_and_matches_brute_force(rec, data):
    item = data.item_ids[49]  # Star Wars (1977)
    res = rec.similar(item, 10, space="text")
    assert res.source == "text"
    assert [h.id for h in res.hits] == brute(
        data.text_vectors, data.item_ids, data.text_vectors[49], 10, exclude={item}
    )
    assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:], strict=False))
    assert res.hits[0].metadata["title"]
    default = rec.similar(item, 5)  # similar_space: two-tower
    assert default.source == "two-tower" and item not in {h.id for h in default.hits}


def test_similar_with_filter_returns_k_matching(rec, data):
    flt = {"genres": {"$in": ["Horror"]}, "year": {"$gte": 1980}}
    eligible = [i for i, m in zip(data.item_ids, data.item_meta, strict=True) if matches(m, flt)]
    assert len(eligible) > 5
    res = rec.similar(data.item_ids[0], len(eligible), flt, space="text")
    assert {h.id for h in res.hits} == set(eligible) - {data.item_ids[0]}
    assert all(matches(h.metadata, flt) for h in res.hits)


def test_similar_unknown_item_and_unknown_space(rec):
    with pytest.raises(ItemNotFound, match="'no-such-item'"):
        rec.similar("no-such-item", 5)
    with pytest.raises(SpaceNotConfigured, match="unknown space 'audio'"):
        rec.similar("1", 5, space="audio")


def test_recommend_excludes_seen_and_requeries_until_k(rec, data):
    user = heaviest_user(data)
    seen = seen_in_catalog(data, user)
    assert len(seen) > 40  # far more than the first over-fetch leaves room for
    query = data.model.user_vectors(data.users[data.users["user_id"] == user])[0]
    for k in (10, 50):
        res = rec.recommend(user, k)
        assert res.source == "two-tower"
        assert [h.id for h in res.hits] == brute(
            data.item_vectors, data.item_ids, query, k, exclude=seen
        )
    everything = rec.recommend(user, 1000)
    assert {h.id for h in everything.hits} == set(data.item_ids) - seen
    with_seen = rec.recommend(user, 10, exclude_seen=False)
    assert [h.id for h in with_seen.hits] == brute(data.item_vectors, data.item_ids, query, 10)


def test_recommend_with_filter(rec, data):
    user = heaviest_user(data)
    seen = seen_in_catalog(data, user)
    query = data.model.user_vectors(data.users[data.users["user_id"] == user])[0]
    meta = dict(zip(data.item_ids, data.item_meta, strict=True))
    flt = {"genres": {"$in": ["Comedy", "Drama"]}}
    eligible = [i for i in data.item_ids if matches(meta[i], flt) and i not in seen]
    assert len(eligible) > 15
    res = rec.recommend(user, 15, filter=flt)
    assert [h.id for h in res.hits] == brute(
        data.item_vectors, data.item_ids, query, 15, seen, lambda i: matches(meta[i], flt)
    )
    assert all(matches(h.metadata, flt) for h in res.hits)


def test_new_user_gets_the_feature_only_tower(rec, data):
    features = {"age": 31, "gender": "F", "occupation": "engineer"}
    res = rec.recommend("new-user-1", 10, features=features)
    assert res.source == "features"
    query = data.model.user_vectors([{"user_id": "new-user-1", **features}])[0]
    assert [h.id for h in res.hits] == brute(data.item_vectors, data.item_ids, query, 10)


def test_unknown_user_without_features_gets_popular_items(rec, data):
    counts = data.ratings["item_id"].value_counts()
    in_store = [i for i in counts.index if i in set(data.item_ids)]
    res = rec.recommend("stranger", 5)
    assert res.source == "popularity"
    assert [h.id for h in res.hits] == in_store[:5]
    assert [h.score for h in res.hits] == [float(counts[i]) for i in in_store[:5]]
    flt = {"genres": {"$in": ["Drama"]}}
    meta = dict(zip(data.item_ids, data.item_meta, strict=True))
    filtered = rec.recommend("stranger", 5, filter=flt)
    assert [h.id for h in filtered.hits] == [i for i in in_store if matches(meta[i], flt)][:5]


def test_search_text_finds_the_title(rec):
    res = rec.search_text("Star Wars", 3)
    assert res.source == "text"
    assert "50" in [h.id for h in res.hits]  # Star Wars (1977)
    filtered = rec.search_text("space adventure", 5, {"year": {"$lt": 1970}})
    assert len(filtered.hits) == 5 and all(h.metadata["year"] < 1970 for h in filtered.hits)


def test_search_image_finds_the_image_itself(rec, data):
    res = rec.search_image(data.images[3], 3)
    assert res.source == "image"
    assert res.hits[0].id == data.image_ids[3]
    assert res.hits[0].score == pytest.approx(1.0, abs=1e-4)
    category = data.image_meta[3]["category"]
    same = rec.search_image(data.images[3], 40, {"category": category})
    pairs = zip(data.image_ids, data.image_meta, strict=True)
    expected = [i for i, m in pairs if m["category"] == category]
    assert sorted(h.id for h in same.hits) == sorted(expected)


def test_batch_forms_equal_single_calls(rec, data):
    items = data.item_ids[:3]
    assert [r.hits for r in rec.similar_batch(items, 4)] == [rec.similar(i, 4).hits for i in items]
    users = [heaviest_user(data), "stranger", "1"]
    batch = rec.recommend_batch(users, 6)
    assert [r.source for r in batch] == ["two-tower", "popularity", "two-tower"]
    assert [r.hits for r in batch] == [rec.recommend(u, 6).hits for u in users]
    # a batch is embedded padded together: the same ids, scores equal to float precision
    texts = ["love story", "war"]
    assert_same(rec.search_text_batch(texts, 4), [rec.search_text(t, 4) for t in texts])
    imgs = list(data.images[:2])
    assert_same(rec.search_image_batch(imgs, 4), [rec.search_image(i, 4) for i in imgs])


def test_bad_input_is_refused_before_any_store_call(rec):
    with pytest.raises(FilterError, match=r"\$regex"):
        rec.similar("1", 5, {"title": {"$regex": "Star"}})
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rec.recommend("1", 0)
    with pytest.raises(ValueError, match="empty text"):
        rec.search_text("   ")
    with pytest.raises(ValueError, match="cannot decode image bytes"):
        rec.search_image(b"not an image")
    assert rec.fallback_counts() == {}


# -- failover ------------------------------------------------------------------------------


@pytest.fixture()
def tt_stores(data: Data, tmp_path: Path):
    primary = build_store(
        f"faiss:{tmp_path}/primary?index=Flat", data.item_ids, data.item_vectors, data.item_meta
    )
    replica = build_store(
        f"faiss:{tmp_path}/replica?index=HNSW32", data.item_ids, data.item_vectors, data.item_meta
    )
    return primary, replica


def test_failing_primary_falls_back_to_the_replica(data, tmp_path, tt_stores, caplog):
    primary, replica = tt_stores
    faulty = FaultyStore(primary, healthy_calls=2)
    fo = Failover("two-tower", faulty, replica, timeout_s=None, cooldown_s=60)
    rec = make_recommender(data, tmp_path, two_tower=fo)
    user = heaviest_user(data)
    before = [rec.recommend(user, 10, exclude_seen=False).hits for _ in range(2)]
    assert rec.fallback_counts() == {}
    with caplog.at_level(logging.WARNING, logger="embedrec.retrieval.client"):
        after = [rec.recommend(user, 10, exclude_seen=False).hits for _ in range(3)]
    assert [[h.id for h in hits] for hits in after] == [[h.id for h in before[0]]] * 3
    assert rec.fallback_counts() == {("two-tower", "search"): 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage, not per call
    assert faulty.uri in warnings[0].getMessage() and replica.uri in warnings[0].getMessage()
    assert faulty.calls == 3  # in its cooldown the primary is not asked
    rec.similar(data.item_ids[0], 3)
    assert rec.fallback_counts()[("two-tower", "fetch")] == 1


def test_without_replica_the_error_names_the_store(data, tmp_path, tt_stores):
    faulty = FaultyStore(tt_stores[0], healthy_calls=0)
    rec = make_recommender(data, tmp_path, two_tower=Failover("two-tower", faulty))
    with pytest.raises(
        StoreUnavailable, match=re.escape(f"two-tower store {faulty.uri} failed on search")
    ):
        rec.recommend(heaviest_user(data), 5)


def test_replica_failing_too_names_both(data, tmp_path, tt_stores):
    primary, replica = (FaultyStore(s) for s in tt_stores)
    rec = make_recommender(data, tmp_path, two_tower=Failover("two-tower", primary, replica))
    with pytest.raises(StoreUnavailable, match=r"replica faulty\+faiss:.*replica"):
        rec.recommend(heaviest_user(data), 5)


def test_slow_primary_times_out_to_the_replica(data, tmp_path, tt_stores):
    slow = FaultyStore(tt_stores[0], healthy_calls=10**9, delay_s=1.0, remote=True)
    fo = Failover("two-tower", slow, tt_stores[1], timeout_s=0.1, cooldown_s=60)
    rec = make_recommender(data, tmp_path, two_tower=fo)
    res = rec.recommend(heaviest_user(data), 5, exclude_seen=False)
    assert len(res.hits) == 5
    assert rec.fallback_counts() == {("two-tower", "search"): 1}
    alone = Failover("two-tower", slow, timeout_s=0.1)
    with pytest.raises(StoreUnavailable, match=r"no answer within 0.1 s"):
        alone.call("search", lambda s: s.search(data.item_vectors[:1], 3))


def test_in_process_stores_are_called_inline(data, tt_stores):
    """No timeout thread for an in-process store: it cannot hang on the network, and a
    thread hop would cost more than the search itself."""
    slow = FaultyStore(tt_stores[0], healthy_calls=10**9, delay_s=0.3)
    fo = Failover("two-tower", slow, tt_stores[1], timeout_s=0.1)
    assert not fo.remote
    caller = threading.get_ident()
    threads = []
    hits = fo.call(
        "search",
        lambda s: threads.append(threading.get_ident()) or s.search(data.item_vectors[:1], 3),
    )
    assert threads == [caller] and len(hits[0]) == 3


def test_bad_input_does_not_fail_over(data, tmp_path, tt_stores):
    primary, replica = tt_stores
    rec = make_recommender(data, tmp_path, two_tower=Failover("two-tower", primary, replica))
    with pytest.raises(FilterError):
        rec.recommend("1", 5, filter={"year": {"$gt": "1990"}})
    assert rec.fallback_counts() == {}


@pytest.mark.parametrize(
    "error",
    [
        FilterError("$and: nested too deep"),
        DimensionError("query has 3 dims"),
        RecursionError("maximum recursion depth exceeded"),
        TypeError("a bug in the caller"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_only_store_faults_fail_over(tt_stores, error):
    """Bad input, or a bug, raised inside a store call is raised as it is: the replica is not
    asked and the primary stays in service."""
    primary, replica = tt_stores
    fo = Failover("two-tower", primary, replica, timeout_s=None, cooldown_s=60)
    asked = []

    def failing(store):
        asked.append(store)
        raise error

    with pytest.raises(type(error)):
        fo.call("search", failing)
    assert asked == [primary]
    assert fo.call("count", lambda s: s) is primary


@pytest.mark.parametrize(
    "fault", [StoreUnavailable("down"), CorruptStore("torn"), ConnectionResetError("reset")]
)
def test_store_faults_fail_over(tt_stores, fault):
    primary, replica = tt_stores

    def failing_on_the_primary(store):
        if store is primary:
            raise fault
        return store

    fo = Failover("two-tower", primary, replica, timeout_s=None, cooldown_s=60)
    assert fo.call("search", failing_on_the_primary) is replica
    assert fo.call("count", lambda s: s) is replica  # in its cooldown


def test_replica_must_match_the_primary(tt_stores, data, tmp_path):
    other = build_store(
        f"faiss:{tmp_path}/text?index=Flat", data.item_ids, data.text_vectors, data.item_meta
    )
    with pytest.raises(ValueError, match="does not match its primary"):
        Failover("two-tower", tt_stores[0], other)


# -- from_config -----------------------------------------------------------------------------


USERS_FROM_FILES = 'users = "{root}/users.csv"\nratings = "{root}/ratings.parquet"\n'
USERS_FROM_TRAIN_CONFIG = 'data = "{root}/train.toml"\n'
TRAIN_DATA = """
[data.interactions]
path = "{root}/ratings.parquet"
user = "user_id"
item = "item_id"
rating = "rating"
[data.items]
path = "{root}/items.parquet"
id = "item_id"
[data.users]
path = "{root}/users.parquet"
id = "user_id"
"""


@pytest.mark.parametrize("users", [USERS_FROM_FILES, USERS_FROM_TRAIN_CONFIG])
def test_from_config_serves_stores_on_disk(data, tmp_path, users):
    build_store(
        f"faiss:{tmp_path}/text?index=HNSW32", data.item_ids, data.text_vectors, data.item_meta
    ).close()
    build_store(
        f"faiss:{tmp_path}/tt?index=HNSW32", data.item_ids, data.item_vectors, data.item_meta
    ).close()
    data.model.save(tmp_path / "tt.pt")
    data.users.to_csv(tmp_path / "users.csv", index=False)
    data.users.to_parquet(tmp_path / "users.parquet")
    data.ratings.to_parquet(tmp_path / "ratings.parquet")
    pd.DataFrame({"item_id": data.ratings["item_id"].unique()}).to_parquet(
        tmp_path / "items.parquet"
    )
    (tmp_path / "train.toml").write_text(TRAIN_DATA.format(root=tmp_path))
    config = tmp_path / "serve.toml"
    config.write_text(
        f"""
[server]
similar_space = "text"
[text]
uri = "faiss:{tmp_path}/text"
[two_tower]
uri = "faiss:{tmp_path}/tt"
replica = "faiss:{tmp_path}/tt"
model = "{tmp_path}/tt.pt"
timeout_s = 5
[users]
{users.format(root=tmp_path)}"""
    )
    rec = Recommender.from_config(config)
    assert rec.spaces == ["text", "two-tower"]
    assert rec.similar("50", 3).source == "text"
    user = heaviest_user(data)
    res = rec.recommend(user, 10)
    assert res.source == "two-tower" and len(res.hits) == 10
    assert not {h.id for h in res.hits} & seen_in_catalog(data, user)
    with pytest.raises(SpaceNotConfigured, match="no image space"):
        rec.search_image(data.images[0])
    rec.close()


@pytest.fixture
def edge_stores(data, tmp_path):
    """qdrant+edge stores on disk (an edge shard has one opener at a time, so reopening one
    shows whether the last opener closed it): text vectors, two-tower item vectors, and
    text vectors where two-tower ones belong (`wrong`, of another dimension than the model's)."""
    pytest.importorskip("embedrec.stores.qdrant.edge_engine", reason="needs embedrec[qdrant]")
    uris = {name: f"qdrant+edge:{tmp_path}/{name}" for name in ("text", "tt", "wrong")}
    build_store(uris["text"], data.item_ids, data.text_vectors, data.item_meta).close()
    build_store(uris["tt"], data.item_ids, data.item_vectors, data.item_meta).close()
    build_store(uris["wrong"], data.item_ids, data.text_vectors, data.item_meta).close()
    return uris


def assert_closed(failed: pytest.ExceptionInfo, *uris: str) -> None:
    """`failed` keeps the traceback, and with it whatever the failed start still referred
    to, alive: a store is free to open again only if that start closed it, not the GC."""
    assert failed.traceback
    for uri in uris:
        with open_store(uri) as store:  # StoreLocked if a failed start left it open
            assert store.count() > 0


def test_from_config_closes_its_stores_when_a_replica_is_missing(edge_stores, tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[text]\nuri = "{edge_stores["text"]}"\nembedder = "text"\n'
        f'replica = "faiss:{tmp_path}/none"\n'
    )
    missing = (
        f"no store at faiss:{tmp_path}/none (from [text] replica in {config}): "
        "build it with `embedrec ingest`"
    )
    with pytest.raises(StoreNotFound, match=re.escape(missing)) as failed:
        Recommender.from_config(config)
    assert_closed(failed, edge_stores["text"])


def test_from_config_closes_its_stores_when_a_later_part_fails(data, edge_stores, tmp_path):
    data.model.save(tmp_path / "tt.pt")
    config = tmp_path / "serve.toml"
    text = f'[text]\nuri = "{edge_stores["text"]}"\n'
    # every store, embedder and the model open, then Recommender() finds the dims differ
    config.write_text(
        text + f'[two_tower]\nuri = "{edge_stores["wrong"]}"\nmodel = "{tmp_path}/tt.pt"\n'
    )
    with pytest.raises(ConfigError, match="two-tower model gives 16-d vectors") as failed:
        Recommender.from_config(config)
    assert_closed(failed, *edge_stores.values())
    config.write_text(
        text + f'[two_tower]\nuri = "{edge_stores["tt"]}"\nmodel = "{tmp_path}/no.pt"\n'
    )
    no_model = f"{tmp_path}/no.pt: no such model file (from [two_tower] model in {config})"
    with pytest.raises(ConfigError, match=re.escape(no_model)) as failed:
        Recommender.from_config(config)
    assert_closed(failed, *edge_stores.values())
    config.write_text(
        text + f'[two_tower]\nuri = "{edge_stores["text"]}"\nmodel = "{tmp_path}/tt.pt"\n'
    )
    with pytest.raises(StoreLocked) as failed:  # the text store opened twice
        Recommender.from_config(config)
    assert_closed(failed, *edge_stores.values())


def test_config_errors_name_the_key(tmp_path):
    from embedrec.common.config import ConfigFileError
    from embedrec.retrieval.config import load_serve_config

    path = tmp_path / "bad.toml"
    path.write_text('[text]\nuri = "faiss:x"\ntimeout = 3\n[users]\ndata = "train.toml"\n')
    with pytest.raises(ConfigFileError, match=r"unknown key 'timeout' in \[text\]"):
        load_serve_config(path)
    path.write_text('[users]\ndata = "train.toml"\n[text]\nuri = "faiss:x"\n')
    with pytest.raises(ConfigFileError, match=r"needs \[two_tower\]"):
        load_serve_config(path)
    tt = '[two_tower]\nuri = "faiss:x"\nmodel = "m.pt"\n'
    path.write_text(tt + '[users]\ndataset = "movielens"\n')  # named by the train config now
    with pytest.raises(ConfigFileError, match=r"unknown key 'dataset' in \[users\]"):
        load_serve_config(path)
    path.write_text(tt + '[users]\ndata = "train.toml"\nusers = "users.csv"\n')
    with pytest.raises(ConfigFileError, match="give data alone"):
        load_serve_config(path)
    path.write_text(tt + '[users]\nratings = "ratings.csv"\n')
    with pytest.raises(ConfigFileError, match="or both users and ratings"):
        load_serve_config(path)
