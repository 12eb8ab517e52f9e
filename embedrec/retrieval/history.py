"""Users' recent histories: what a sequence user encoder reads at request time.

`Histories` is the contract: `recent(user_id, n)` gives a user's last `n` interactions,
oldest first. `TrainingHistories`, the default, reads them from the training interactions
the service loads (`[users]`), ordered by `ranking.splits.chronological` (by timestamp; among
equal timestamps, in table order). A live source of events (Redis, in-process) implements the
same protocol and is passed to `Recommender(histories=...)`.

A request's own `history` (item ids oldest first, or `Interaction`s with timestamps) comes
after the stored one. `HISTORY_CAP` bounds it: the service answers a longer one with 422.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def as_interactions(history: Sequence[str | Interaction]) -> list[Interaction]:
    """A request's history as `Interaction`s (a bare id has no timestamp)."""
    return [h if isinstance(h, Interaction) else Interaction(str(h)) for h in history]
