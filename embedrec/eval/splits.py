"""Train/test splits of a ratings table (columns user_id, item_id, rating, timestamp).

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


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest rating (by timestamp; among equal timestamps the last in table
    order) is the test set, the rest is training. Users with a single rating stay in
    training only, since nothing would be left to learn from."""
    _require(ratings, USER, ITEM, TIMESTAMP)
    data = ratings.assign(_row=np.arange(len(ratings)))
    data = data.sort_values([USER, TIMESTAMP, "_row"], kind="stable")
    size = data.groupby(USER, sort=False)[USER].transform("count").to_numpy()
    last = ~data[USER].duplicated(keep="last").to_numpy() & (size > 1)
    data = data.drop(columns="_row")
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
