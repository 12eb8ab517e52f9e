"""Two cheap next-item baselines: what is popular lately, and what usually comes next."""

from __future__ import annotations

import numpy as np

from embedrec.eval.models.baselines import Catalog, Model
from embedrec.eval.models.next_item_params import RecentPopularityParams, TransitionsParams
from embedrec.eval.models.sequential.history import histories, ordered_train

DAY = 86_400


def _popularity(catalog: Catalog) -> np.ndarray:
    counts = catalog.train["item_id"].value_counts()
    return catalog.items["item_id"].map(counts).fillna(0).to_numpy(np.float64)


def _tie_break(popularity: np.ndarray, below: float) -> np.ndarray:
    """All-time popularity scaled into [0, below): added to scores that are 0 or at least
    `below`, every positive score still outranks every zero, and equal scores are ordered
    by popularity."""
    return below * popularity / (popularity.max() + 1.0)


class RecentPopularity(Model):
    """Items ranked by their training interactions in a trailing window of `days` days,
    ending at the training part's last interaction (anchor "global": the same list for
    everyone) or at the user's own last one (anchor "user"); all-time popularity breaks
    ties, so an empty window falls back to most popular."""

    name = "recent popularity"
    store_based = False

    def __init__(self, params: RecentPopularityParams) -> None:
        self.params = params

    def fit(self, catalog: Catalog) -> None:
        train = ordered_train(catalog, "recent-popularity")
        train = train[train["item_id"].isin(catalog.item_index.index)]
        times = train["timestamp"].to_numpy(np.int64)
        order = np.argsort(times, kind="stable")
        self.times = times[order]
        self.items = catalog.item_index.loc[train["item_id"]].to_numpy()[order]
        self.n_items = len(catalog.items)
        self.base = _tie_break(_popularity(catalog), 1.0)
        last = train.groupby("user_id")["timestamp"].max()
        self.user_last = (
            catalog.users["user_id"].map(last).fillna(self.times[-1]).to_numpy(np.int64)
        )

    def _window(self, end: int) -> np.ndarray:
        lo = np.searchsorted(self.times, end - self.params.days * DAY, side="right")
        hi = np.searchsorted(self.times, end, side="right")
        return np.bincount(self.items[lo:hi], minlength=self.n_items).astype(np.float64)

    def scores(self, users: np.ndarray) -> np.ndarray:
        if self.params.anchor == "global":
            row = self._window(int(self.times[-1])) + self.base
            return np.broadcast_to(row, (len(users), self.n_items)).copy()
        out = np.empty((len(users), self.n_items))
        cache: dict[int, np.ndarray] = {}
        for n, end in enumerate(self.user_last[users]):
            if end not in cache:
                cache[end] = self._window(int(end)) + self.base
            out[n] = cache[end]
        return out


class Transitions(Model):
    """Last-item transitions: C[a, b] counts how often b directly follows a in a user's
    training sequence; a user's latest `history` items vote for their successors, the j-th
    latest (j = 0 the last) with weight decay ** j. All-time popularity breaks ties, so
    items no transition reaches rank as most popular."""

    name = "last-item transitions"
    store_based = False

    def __init__(self, params: TransitionsParams) -> None:
        self.params = params

    def fit(self, catalog: Catalog) -> None:
        self.histories = histories(catalog, "transitions")
        n = len(catalog.items)
        pairs = [(h[:-1], h[1:]) for h in self.histories if len(h) > 1]
        src = np.concatenate([a for a, _ in pairs]) if pairs else np.zeros(0, np.int64)
        dst = np.concatenate([b for _, b in pairs]) if pairs else np.zeros(0, np.int64)
        self.counts = np.zeros((n, n), dtype=np.float32)
        np.add.at(self.counts, (src, dst), 1.0)
        smallest = self.params.decay ** (self.params.history - 1)
        # far below the smallest vote, so that it hardly ever reorders unequal votes
        self.base = _tie_break(_popularity(catalog), 1e-6 * smallest)

    def scores(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.counts.shape[0]))
        weights = self.params.decay ** np.arange(self.params.history)
        for n, user in enumerate(users):
            latest = self.histories[user][::-1][: self.params.history]
            out[n] = weights[: len(latest)] @ self.counts[latest] + self.base
        return out
