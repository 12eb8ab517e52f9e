"""Train/test splits of an interactions table (columns user_id, item_id, and timestamp for
the time-based splits); any dataset loaded through a `[data]` config has these columns.

`stratified_split` reimplements Microsoft Recommenders'
`recommenders/datasets/python_splitters.py::python_stratified_split` step for step (same
random draws for the same row order and seed), so that our MovieLens numbers sit beside
their benchmark (examples/06_benchmarks/movielens.ipynb: ratio=0.75, min_rating=1,
filter_by="item", seed=42).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

USER, ITEM, TIMESTAMP = "user_id", "item_id", "timestamp"
SPLITS: dict[str, str] = {
    "stratified": "stratified by item {train}/{test} (seed {seed})",
    "random": "random {train}/{test} (seed {seed})",
    "leave-last-out": "leave-last-out per user",
    "temporal": "global temporal {train}/{test} (train before, test after)",
}
"""Split names, each with the line a leaderboard describes it by."""


def _require(ratings: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings lack column(s) {missing}; they have {list(ratings.columns)}")


def stratified_split(
    ratings: pd.DataFrame,
    ratio: float = 0.75,
    *,
    min_rating: int = 1,
    filter_by: str = "user",
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user (or per item), a random `ratio` of its ratings goes to train, the rest to test.

    As in Recommenders: groups with fewer than `min_rating` ratings are dropped; each row gets
    a uniform draw from `np.random.seed(seed); np.random.rand(n)` (in the table's row order);
    rows are sorted by (group, draw); a row whose rank (1-based) is <= round(ratio * group
    size) is training, rounding half to even as pandas' `Series.round` does. So a group of
    one rating goes to train (round(0.75) = 1), and of two, both (round(1.5) = 2).
    """
    if filter_by not in ("user", "item"):
        raise ValueError(f"filter_by should be 'user' or 'item', got {filter_by!r}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if min_rating < 1:
        raise ValueError(f"min_rating must be an integer >= 1, got {min_rating}")
    _require(ratings, USER, ITEM)
    by = USER if filter_by == "user" else ITEM
    data = ratings
    if min_rating > 1:
        data = data[data.groupby(by)[by].transform("count") >= min_rating]
    draw = np.random.RandomState(seed).rand(len(data))
    data = data.assign(_draw=draw).sort_values([by, "_draw"], kind="stable")
    groups = data.groupby(by, sort=False)[by]
    rank = groups.cumcount() + 1
    train_mask = (rank <= (ratio * groups.transform("count")).round()).to_numpy()
    data = data.drop(columns="_draw")
    return data[train_mask], data[~train_mask]


def chronological(ratings: pd.DataFrame) -> pd.DataFrame:
    """The interactions grouped by user, each user's oldest first: by timestamp, and among
    equal timestamps (or without a timestamp column) in table order. The one ordering rule
    of every sequence here: leave-last-out, the sequence user encoder's training histories
    and the histories a service reads."""
    _require(ratings, USER)
    by = [USER, TIMESTAMP] if TIMESTAMP in ratings.columns else [USER]
    # a stable sort keeps table order among ties
    return ratings.sort_values(by, kind="stable")


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest rating (by timestamp; among equal timestamps the last in table
    order: `chronological`) is the test set, the rest is training. Users with a single
    rating stay in training only, since nothing would be left to learn from."""
    _require(ratings, USER, ITEM, TIMESTAMP)
    data = chronological(ratings)
    size = data.groupby(USER, sort=False)[USER].transform("count").to_numpy()
    last = ~data[USER].duplicated(keep="last").to_numpy() & (size > 1)
    return data[~last], data[last]


def cold_item_split(
    ratings: pd.DataFrame, fraction: float = 0.1, *, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a random `fraction` of the items entirely: training keeps no rating of them,
    test holds all of their ratings."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    _require(ratings, ITEM)
    items = np.sort(ratings[ITEM].unique())
    n_cold = max(1, round(fraction * len(items)))
    cold = np.random.RandomState(seed).choice(items, size=n_cold, replace=False)
    is_cold = ratings[ITEM].isin(cold).to_numpy()
    return ratings[~is_cold], ratings[is_cold]


def random_split(
    ratings: pd.DataFrame, ratio: float = 0.75, *, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A uniformly random `ratio` of all interactions goes to train (rounded to a whole
    row), the rest to test; row order is kept within each part."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    n_train = round(ratio * len(ratings))
    train = np.zeros(len(ratings), dtype=bool)
    train[np.random.RandomState(seed).permutation(len(ratings))[:n_train]] = True
    return ratings[train], ratings[~train]


def temporal_split(ratings: pd.DataFrame, ratio: float = 0.75) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A global time cut: the earliest `ratio` of interactions (by timestamp) train, the
    later ones test, so that no test interaction precedes a training one. Interactions at
    the cut's timestamp all go to train, so the train share can exceed `ratio` a little."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    _require(ratings, TIMESTAMP)
    if len(ratings) == 0:
        raise ValueError("no interactions to split")
    times = ratings[TIMESTAMP].to_numpy()
    cut = np.sort(times, kind="stable")[max(round(ratio * len(times)) - 1, 0)]
    train = times <= cut
    if train.all():
        raise ValueError(
            f"every interaction is at or before the {ratio:.0%} time cut ({cut}); "
            "the timestamps are too coarse for a temporal split"
        )
    return ratings[train], ratings[~train]


def make_split(
    name: str, ratings: pd.DataFrame, *, ratio: float = 0.75, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split called `name` (a key of `SPLITS`); stratified goes by item, as in
    Recommenders' MovieLens benchmark."""
    if name == "stratified":
        return stratified_split(ratings, ratio, filter_by="item", seed=seed)
    if name == "random":
        return random_split(ratings, ratio, seed=seed)
    if name == "leave-last-out":
        return leave_last_out(ratings)
    if name == "temporal":
        return temporal_split(ratings, ratio)
    raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")


def describe_split(name: str, *, ratio: float = 0.75, seed: int = 42) -> str:
    train = round(ratio * 100)
    return SPLITS[name].format(train=train, test=100 - train, seed=seed)
