"""The next-item models: the two session baselines on tiny data with known answers, and each
of Cornac's sequential wrappers on a planted sequence (each user walks a cycle of items)."""

import numpy as np
import pandas as pd
import pytest

from embedrec.eval.models.baselines import Catalog
from embedrec.eval.models.leaderboard import score_model
from embedrec.eval.models.next_item_params import (
    BERT4RecParams,
    FPMCParams,
    GRU4RecParams,
    RecentPopularityParams,
    SASRecParams,
    SPopParams,
    TransitionsParams,
)
from embedrec.eval.models.sequential.session import DAY, RecentPopularity, Transitions
from embedrec.ranking.splits import leave_last_out

ITEMS = ["a", "b", "c", "d"]


def catalog(rows: list[tuple[str, str, float]]) -> Catalog:
    """A catalogue of ITEMS over (user, item, day) rows, in that table order."""
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "day"])
    train = train.assign(timestamp=(train.pop("day") * DAY).astype(np.int64))
    users = pd.DataFrame({"user_id": sorted(train["user_id"].unique())})
    return Catalog(users, pd.DataFrame({"item_id": ITEMS}), train)


def ranked(scores: np.ndarray) -> list[list[str]]:
    return [[ITEMS[i] for i in np.argsort(-row, kind="stable")] for row in scores]


@pytest.fixture
def recent() -> Catalog:
    # all-time popularity: a 2, c 2, b 1, d 1
    return catalog(
        [("u1", "a", 0), ("u1", "b", 1), ("u2", "a", 2), ("u2", "c", 9), ("u2", "c", 10),
         ("u3", "d", 10)]
    )  # fmt: skip


def test_recent_popularity_counts_the_trailing_window(recent) -> None:
    model = RecentPopularity(RecentPopularityParams(days=2, anchor="global"))
    model.fit(recent)
    scores = model.scores(np.arange(3))
    # the window (day 8, day 10]: c twice, d once; a and b only by all-time popularity
    assert np.floor(scores[0]).tolist() == [0, 0, 2, 1]
    assert ranked(scores) == [["c", "d", "a", "b"]] * 3


def test_recent_popularity_anchored_at_each_users_last_interaction(recent) -> None:
    model = RecentPopularity(RecentPopularityParams(days=2, anchor="user"))
    model.fit(recent)
    scores = model.scores(np.arange(3))
    # u1's window ends on day 1: a (day 0) and b (day 1); a wins the tie on popularity
    assert np.floor(scores[0]).tolist() == [1, 1, 0, 0]
    assert ranked(scores)[0] == ["a", "b", "c", "d"]
    assert ranked(scores)[1] == ranked(scores)[2] == ["c", "d", "a", "b"]


@pytest.fixture
def chains() -> Catalog:
    # u1: a b c, u2: a b d, u3: b c, u4: c a; the table is not in time order
    return catalog(
        [("u1", "c", 3), ("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2),
         ("u2", "d", 3), ("u3", "b", 5), ("u3", "c", 6), ("u4", "c", 1), ("u4", "a", 2)]
    )  # fmt: skip


def test_transitions_count_consecutive_pairs(chains) -> None:
    model = Transitions(TransitionsParams(history=1))
    model.fit(chains)
    # a->b twice, b->c twice, b->d once, c->a once
    expect = np.zeros((4, 4))
    expect[0, 1], expect[1, 2], expect[1, 3], expect[2, 0] = 2, 2, 1, 1
    assert np.array_equal(model.counts, expect)
    scores = model.scores(np.arange(4))
    assert np.allclose(scores, expect[[2, 3, 2, 0]], atol=1e-5)  # last items c, d, c, a
    assert ranked(scores)[3][0] == "b"
    # u2's last item, d, was never followed: the ranking is all-time popularity
    assert ranked(scores)[1] == ["a", "b", "c", "d"]


def test_transitions_with_a_decayed_history(chains) -> None:
    model = Transitions(TransitionsParams(history=2, decay=0.5))
    model.fit(chains)
    # u1's latest are c (weight 1: c->a) and b (weight 0.5: b->c twice, b->d once)
    assert np.allclose(model.scores(np.array([0]))[0], [1.0, 0.0, 1.0, 0.5], atol=1e-5)


def test_session_baselines_need_timestamps(chains) -> None:
    chains.train = chains.train.drop(columns="timestamp")
    with pytest.raises(ValueError, match="needs a timestamp column"):
        Transitions(TransitionsParams()).fit(chains)


def cycle(users: int = 48, items: int = 12, length: int = 9, seed: int = 0):
    """Each user walks s, s+1, ... (mod `items`) from a random start; the last step is the
    test item, so the answer always follows from the user's last item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        start = int(rng.integers(items))
        rows += [(f"u{u}", f"i{(start + t) % items}", 1000 * u + t) for t in range(length)]
    data = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    train, test = leave_last_out(data)
    cat = Catalog(
        pd.DataFrame({"user_id": [f"u{u}" for u in range(users)]}),
        pd.DataFrame({"item_id": [f"i{i}" for i in range(items)]}),
        train,
    )
    return cat, test


@pytest.mark.slow  # the transformers: 15-60 s each on a busy 2-core machine
@pytest.mark.parametrize(
    ("key", "params"),
    [
        ("sasrec", SASRecParams(n_epochs=15, batch_size=32, embedding_dim=16, max_len=10,
                                n_sample=0, learning_rate=0.01, dropout=0.0)),
        ("bert4rec", BERT4RecParams(n_epochs=15, batch_size=32, embedding_dim=16, max_len=10,
                                    n_sample=0, learning_rate=0.01, dropout=0.0)),
        ("gru4rec", GRU4RecParams(n_epochs=30, batch_size=32, layers=[16], n_sample=0)),
        ("fpmc", FPMCParams(n_epochs=15, batch_size=32, embedding_dim=16, n_sample=0)),
    ],
)  # fmt: skip
def test_cornac_sequential_models_learn_the_next_item(key, params) -> None:
    pytest.importorskip("cornac", reason="needs the optional extra 'recsys'")
    from embedrec.eval.models.sequential.cornac_models import CornacSequential

    cat, test = cycle()
    model = CornacSequential(key, params)
    model.fit(cat)
    scores = model.scores(np.arange(len(cat.users)))
    assert scores.shape == (len(cat.users), len(cat.items)) and np.isfinite(scores).all()
    assert score_model(model, cat, test, 1)["hit_rate@1"] >= 0.8


def test_cornac_spop_ranks_by_popularity_and_skips_unknown_items() -> None:
    pytest.importorskip("cornac", reason="needs the optional extra 'recsys'")
    from embedrec.eval.models.sequential.cornac_models import CornacSequential

    cat, _ = cycle(users=6)
    cat = Catalog(cat.users, pd.concat([cat.items, pd.DataFrame({"item_id": ["new"]})]), cat.train)
    model = CornacSequential("spop", SPopParams())
    model.fit(cat)
    scores = model.scores(np.arange(len(cat.users)))
    assert np.isneginf(scores[:, -1]).all()  # an item Cornac never saw is not ranked
    counts = cat.train["item_id"].value_counts().reindex(cat.items["item_id"][:-1]).fillna(0)
    # SPop adds the session's own counts; popularity decides among the other items
    history = set(cat.train[cat.train["user_id"] == "u0"]["item_id"])
    unseen = [i for i, item in enumerate(cat.items["item_id"][:-1]) if item not in history]
    order = np.argsort(-scores[0, unseen], kind="stable")
    assert np.all(np.diff(counts.to_numpy()[unseen][order]) <= 0)


@pytest.mark.parametrize(
    "variant",
    [
        # Cornac's default input, the tied output embedding, two layers (Cornac's weight
        # reset fails on layers of other widths, and on a separate input embedding)
        {"layers": [8, 8]},
        {"layers": [16], "constrained_embedding": False},  # GRU4Rec's GRU embedding
    ],
)
def test_batched_gru4rec_scores_are_cornacs_own(variant) -> None:
    cornac = pytest.importorskip("cornac", reason="needs the optional extra 'recsys'")
    from embedrec.eval.models.sequential.cornac_models import _histories
    from embedrec.eval.models.sequential.gru4rec_scores import gru4rec_scores

    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"u{u}", f"i{rng.integers(20)}", 100 * u + t)
        for u in range(30)
        for t in range(int(rng.integers(1, 16)))  # histories of 1 to 15 items
    ]
    data = cornac.data.SequentialDataset.build(rows, fmt="USIT", seed=0)
    model = cornac.models.GRU4Rec(
        n_epochs=3, batch_size=8, n_sample=0, seed=0, verbose=False, **variant
    )
    model.fit(data)
    histories = [*_histories(data).values(), []]
    batched = gru4rec_scores(model, histories)
    own = np.stack([model.score(0, history) for history in histories])
    assert batched.shape == own.shape == (31, model.total_items)
    assert np.abs(own).max() > 0.01  # a trained model, not an all-zero score
    np.testing.assert_allclose(batched, own, rtol=0, atol=1e-5)
