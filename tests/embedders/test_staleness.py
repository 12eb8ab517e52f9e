"""The sequence tower's staleness input (`staleness_buckets`): the time from a user's last
history item to the query's "now". Planted: within a session the next item follows the last
(a fixed permutation); a user who comes back after weeks starts with one of the items
everyone takes (the hot ones). Only the time since the history ended tells the two apart."""

import numpy as np
import pandas as pd
import pytest

from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.embedders.two_tower.sequence import log_minutes

N_ITEMS, HOT, USERS, SESSIONS = 60, 10, 200, 5
MINUTE, DAY = 60.0, 86400.0


def sessions(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Each user's sessions, weeks apart: a hot item (0-9), then steps along `nxt` minutes
    apart, ending after each step with probability 0.2 (memoryless: how long a session has
    run says nothing of whether it ended). Returns the log and `nxt`."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(N_ITEMS)
    rows = []
    for u in range(USERS):
        t = rng.uniform(0, 30) * DAY
        for _ in range(SESSIONS):
            x = int(rng.integers(HOT))
            for _ in range(1 + int(rng.geometric(0.2))):
                rows.append((f"u{u}", f"i{x}", t))
                x, t = int(nxt[x]), t + rng.uniform(1, 10) * MINUTE
            t += rng.uniform(14, 60) * DAY
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), nxt


def top_items(model: TwoTowerModel, log: pd.DataFrame, after: float) -> np.ndarray:
    """Each user's best item when queried `after` seconds past their last interaction."""
    users = pd.DataFrame({"user_id": log["user_id"].unique()})
    last = log.groupby("user_id")["timestamp"].max().loc[users["user_id"]].to_numpy()
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)]})
    uv = model.user_vectors(users, history=log, items=items, now=last + after)
    return np.argmax(uv @ model.item_vectors(items).T, axis=1)


def fit(log: pd.DataFrame, staleness: int) -> TwoTowerModel:
    config = TwoTowerConfig(
        dim=32, hidden=16, features=False, user_encoder="sequence", history=20, layers=1,
        heads=1, dropout=0.1, epochs=25, batch_size=512, id_dropout=0.0, val_fraction=0.0,
        lr=3e-3, threads=1, staleness_buckets=staleness,
    )  # fmt: skip
    return fit_two_tower(log, None, None, config, progress=False)


def test_log_minutes():
    seconds = np.array([0, MINUTE, 3 * MINUTE, -5.0, np.nan, 400 * DAY])
    assert log_minutes(seconds, 24).tolist() == [1, 2, 3, 1, 0, 20]
    assert log_minutes(seconds, 4).tolist() == [1, 2, 3, 1, 0, 3]
    assert log_minutes(seconds, 0).tolist() == [0] * 6


@pytest.mark.slow
def test_a_stale_history_gets_the_hot_items_a_fresh_one_its_continuation():
    log, nxt = sessions()
    last = log.sort_values("timestamp", kind="stable").groupby("user_id")["item_id"].last()
    follow = np.array([nxt[int(i[1:])] for i in last.loc[log["user_id"].unique()]])
    cold = follow >= HOT  # the users whose continuation is not itself a hot item
    rates = {}
    for staleness in (24, 0):
        model = fit(log, staleness)
        fresh, stale = top_items(model, log, 5 * MINUTE), top_items(model, log, 30 * DAY)
        rates[staleness] = (np.mean(fresh[cold] == follow[cold]), np.mean(stale[cold] < HOT))
    print(f"(fresh: continuation first, stale: a hot item first) by staleness_buckets: {rates}")
    assert min(rates[24]) >= 0.9, rates
    assert rates[0][0] >= 0.9 and rates[0][1] <= 0.3, rates
