"""Users' recent histories: what a sequence user encoder reads at request time.

`Histories` is the contract: `recent(user_id, n)` gives a user's last `n` interactions,
oldest first. `TrainingHistories`, the default, reads them from the training interactions
the service loads (`[users]`), ordered by `ranking.splits.chronological` (by timestamp; among
equal timestamps, in table order). A live source of events (Redis, in-process) implements the
same protocol and is passed to `Recommender(histories=...)`.

A request's own `history` (item ids oldest first, or `Interaction`s with timestamps) comes
after the stored one; a request reads both as `Events`. `HISTORY_CAP` bounds it: the service
answers a longer one with 422.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from embedrec.ranking.splits import chronological

HISTORY_CAP = 200
"""The most interactions one request's `history` may carry."""


@dataclass(frozen=True)
class Interaction:
    """One event in a user's history."""

    item_id: str
    timestamp: float | None = None
    """Epoch seconds; None where unknown."""


class Histories(Protocol):
    def recent(self, user_id: str, n: int) -> list[Interaction]:
        """The user's last `n` interactions at most, oldest first ([] for an unknown user)."""
        ...


class TrainingHistories:
    """Histories read from an interactions table (user_id, item_id, optional timestamp)."""

    def __init__(self, ratings: pd.DataFrame) -> None:
        frame = chronological(ratings.assign(user_id=ratings["user_id"].astype(str)))
        items = frame["item_id"].astype(str).to_numpy()
        times = (
            frame["timestamp"].to_numpy(np.float64)
            if "timestamp" in frame.columns
            else np.full(len(frame), np.nan)
        )
        users = frame["user_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
        ends = [*starts[1:], len(users)]
        self._rows = {users[s]: (items[s:e], times[s:e]) for s, e in zip(starts, ends, strict=True)}

    def recent(self, user_id: str, n: int) -> list[Interaction]:
        found = self._rows.get(str(user_id))
        if found is None or n <= 0:
            return []
        items, times = found[0][-n:], found[1][-n:]
        return [
            Interaction(i, None if np.isnan(t) else float(t))
            for i, t in zip(items.tolist(), times.tolist(), strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Events:
    """A history as two lists, item ids oldest first and their epoch seconds (NaN where
    unknown): how a recommend request reads its histories, with no object per event (a
    request's 50 bare ids as `Interaction`s took 20-50 µs)."""

    ids: list[str]
    times: list[float]

    @classmethod
    def of(cls, history: Sequence[str | Interaction]) -> Events:
        """A request's history (item ids, or `Interaction`s; a bare id has no timestamp) or
        a stored one."""
        if all(type(h) is str for h in history):  # a body's history: bare ids
            return cls(list(history), [math.nan] * len(history))
        return cls(
            [h.item_id if isinstance(h, Interaction) else str(h) for h in history],
            [
                math.nan if not isinstance(h, Interaction) or h.timestamp is None else h.timestamp
                for h in history
            ],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def among(self, held: Container[str]) -> Events:
        """The events whose item `held` holds, in order."""
        keep = [n for n, i in enumerate(self.ids) if i in held]
        if len(keep) == len(self.ids):
            return self
        return Events([self.ids[n] for n in keep], [self.times[n] for n in keep])

    def then(self, later: Events, n: int) -> Events:
        """These events followed by `later`: the last `n` of them."""
        return Events((self.ids + later.ids)[-n:], (self.times + later.times)[-n:])
