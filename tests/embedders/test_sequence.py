"""The sequence user encoder: a planted sequential pattern it learns and the static
two-tower cannot; time-gap buckets; saving and loading; the learned prior a user with no
history gets, and its recency weighting."""

import json

import numpy as np
import pandas as pd
import pytest

from embedrec.embedders.two_tower import (
    Feature,
    Towers,
    TowerSpec,
    TwoTowerConfig,
    TwoTowerModel,
    fit_two_tower,
)
from embedrec.embedders.two_tower.sequence import gap_buckets
from embedrec.ranking.splits import leave_last_out

N_ITEMS, CHAIN_USERS, PROBE_USERS, LENGTH = 200, 300, 100, 20


def planted(seed: int = 0) -> pd.DataFrame:
    """Items follow a fixed random permutation `nxt`: chain users walk it (x, nxt[x], ...);
    probe users visit random items in random order and then nxt of their last one. So the
    next item follows from the last alone, and the set of items seen says nothing of it."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(N_ITEMS)
    rows = []
    for u in range(CHAIN_USERS):
        x = int(rng.integers(N_ITEMS))
        for t in range(LENGTH):
            rows.append((f"c{u}", f"i{x}", t))
            x = int(nxt[x])
    for u in range(PROBE_USERS):
        visited = rng.choice(N_ITEMS, size=LENGTH, replace=False).tolist()
        while nxt[visited[-1]] in visited:
            visited = rng.choice(N_ITEMS, size=LENGTH, replace=False).tolist()
        for t, x in enumerate([*visited, int(nxt[visited[-1]])]):
            rows.append((f"p{u}", f"i{x}", t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def probe_recall(model: TwoTowerModel, train: pd.DataFrame, test: pd.DataFrame) -> float:
    """Recall@10 over the probe users' held-out last items, seen items left out."""
    test = test[test["user_id"].str.startswith("p")].reset_index(drop=True)
    items = pd.DataFrame({"item_id": sorted(train["item_id"].unique())})
    uv = model.user_vectors(test[["user_id"]], history=train, items=items)
    scores = uv @ model.item_vectors(items).T
    col = {i: n for n, i in enumerate(items["item_id"])}
    for n, user in enumerate(test["user_id"]):
        seen = train.loc[train["user_id"] == user, "item_id"]
        scores[n, [col[i] for i in seen]] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    return float(np.mean([col[i] in top[n] for n, i in enumerate(test["item_id"])]))


@pytest.mark.slow
def test_sequence_learns_the_next_item_the_static_model_cannot():
    train, test = leave_last_out(planted())
    common = dict(dim=32, hidden=32, features=False, val_fraction=0.0, threads=1, lr=3e-3)
    seq = fit_two_tower(
        train, None, None,
        TwoTowerConfig(**common, user_encoder="sequence", history=20, layers=1, heads=1,
                       dropout=0.1, epochs=30, batch_size=512, id_dropout=0.0),
        progress=False,
    )  # fmt: skip
    static = fit_two_tower(train, None, None, TwoTowerConfig(**common, epochs=30), progress=False)
    seq_recall, static_recall = probe_recall(seq, train, test), probe_recall(static, train, test)
    print(f"recall@10: sequence {seq_recall:.3f}, static {static_recall:.3f}")
    assert seq_recall >= 0.9, (seq_recall, static_recall)
    assert static_recall <= 0.3, (seq_recall, static_recall)


def test_gap_buckets():
    minute = 60.0
    times = np.array([0, 0, minute, 4 * minute, np.nan, 10 * minute])
    assert gap_buckets(times, 4).tolist() == [0, 1, 2, 3, 0, 0]
    assert gap_buckets(times, 0).tolist() == [0] * 6


def test_same_seed_same_model_and_save_load(tmp_path):
    train = planted().head(3000)
    config = TwoTowerConfig(
        dim=8, hidden=8, features=False, user_encoder="sequence", history=10, layers=1,
        heads=2, epochs=2, val_fraction=0.2, threads=1, time_buckets=4,
    )  # fmt: skip
    a, b = (fit_two_tower(train, None, None, config, progress=False) for _ in range(2))
    users = train[["user_id"]].drop_duplicates()
    va = a.user_vectors(users, history=train)
    np.testing.assert_array_equal(va, b.user_vectors(users, history=train))
    assert a.history == b.history
    loaded = TwoTowerModel.load(a.save(tmp_path / "seq.pt"))
    assert loaded.config.user_encoder == "sequence"
    np.testing.assert_allclose(loaded.user_vectors(users, history=train), va, atol=1e-6)
    # a user's vector depends on the order of their items
    reordered = train.assign(timestamp=-train["timestamp"])
    assert not np.allclose(a.user_vectors(users, history=reordered), va)


def test_full_softmax_and_user_features_train():
    train = planted().head(800)
    users = pd.DataFrame({"user_id": train["user_id"].unique()})
    users["segment"] = np.where(users["user_id"].str.startswith("c"), "chain", "probe")
    towers = Towers(
        user=TowerSpec(id="user_id", features=[Feature(kind="categorical", column="segment")])
    )
    config = TwoTowerConfig(
        dim=8, hidden=8, user_encoder="sequence", history=10, layers=1, heads=1,
        negatives="all", epochs=1, val_fraction=0.0, threads=1,
    )  # fmt: skip
    model = fit_two_tower(train, users, None, config, towers=towers, progress=False)
    vectors = model.user_vectors(users, history=train)
    assert vectors.shape == (len(users), 8) and np.isfinite(vectors).all()
    # the features join the output: the same history, another segment, another vector
    flipped = users.assign(segment=np.where(users["segment"] == "chain", "probe", "chain"))
    assert not np.allclose(model.user_vectors(flipped, history=train), vectors)


def shifting_tastes(seed: int = 0) -> pd.DataFrame:
    """Items 0-9 are the favourites of the first 70 of 100 days, items 10-19 of the last 30
    (fewer interactions: all-time popularity still ranks 0-9 first), 20-59 background."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(100):
        for day in np.sort(rng.uniform(0, 100, size=20)):
            early = day < 70
            if rng.random() < (0.7 if early else 0.5):
                item = int(rng.integers(10)) + (0 if early else 10)
            else:
                item = 20 + int(rng.integers(40))
            rows.append((f"u{u}", f"i{item}", day * 86400.0))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def empty_history_top(model: TwoTowerModel, train: pd.DataFrame) -> set[int]:
    """The ten items a user with no history gets."""
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(60)]})
    query = model.user_vectors(pd.DataFrame({"user_id": ["newcomer"]}), history=train)
    return set(np.argsort(-(query @ model.item_vectors(items).T)[0])[:10].tolist())


@pytest.mark.parametrize(("recency_days", "favourites"), [(0.0, range(10)), (5.0, range(10, 20))])
def test_a_user_with_no_history_gets_the_learned_prior(recency_days, favourites):
    """The empty-history query is fitted to every target: all-time popularity, or with
    `recency_days` the recent favourites (before `recency_days`, only the former)."""
    train = shifting_tastes()
    config = TwoTowerConfig(
        dim=16, hidden=16, features=False, user_encoder="sequence", history=10, layers=1,
        heads=1, epochs=8, val_fraction=0.0, threads=1, lr=5e-3, recency_days=recency_days,
    )  # fmt: skip
    model = fit_two_tower(train, None, None, config, progress=False)
    top = empty_history_top(model, train)
    assert len(top & set(favourites)) >= 8, sorted(top)


def test_a_model_saved_before_the_prior_loads_without_one(tmp_path):
    """A file whose config has no `prior` key (saved before it existed) holds a tower without
    the prior's weight: it loads as `prior = false`, with the same user vectors (and without
    `staleness_buckets`, as 0)."""
    train = planted().head(2000)
    config = TwoTowerConfig(
        dim=8, hidden=8, features=False, user_encoder="sequence", history=10, layers=1,
        heads=2, epochs=1, threads=1, prior=False,
    )  # fmt: skip
    model = fit_two_tower(train, None, None, config, progress=False)
    path = model.save(tmp_path / "old.pt")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["config"]["prior"], meta["config"]["staleness_buckets"]
    meta_path.write_text(json.dumps(meta))
    loaded = TwoTowerModel.load(path)
    assert loaded.config.prior is False and loaded.config.staleness_buckets == 0
    users = train[["user_id"]].drop_duplicates()
    np.testing.assert_allclose(
        loaded.user_vectors(users, history=train),
        model.user_vectors(users, history=train),
        atol=1e-6,
    )
