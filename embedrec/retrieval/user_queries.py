"""The vector each user of a recommend request is searched with, and where it came from.

Histories (a request's own, after the user's stored one from `Histories`) are read as the
item tower's vectors of their items, fetched from the two-tower store: the vectors the model
would compute, and an item ingested without interactions (a cold one) has one too. An id
the store lacks is dropped; those of the request's history are counted.

- Sequence encoder: the user's last `history` interactions (stored, then the request's)
  through the sequence tower, with the user's declared features where known (a known user's
  row of the user table, or a new user's `features`): source "two-tower" when the user has a
  stored history, else "history". With no history at all, the features alone ("features").
  The tower reads the history as of the request's `now` (default: the time of the request).
- Static encoder: a known user's learned vector ("two-tower"); a new user with a history, the
  normalised mean of its items' vectors ("history"); else the features ("features").
- Nothing of these: the caller falls back to popularity.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedrec.common.vectors import l2_normalize
from embedrec.retrieval.history import HISTORY_CAP, Events, Histories
from embedrec.retrieval.spaces import Space

NO_EVENTS = Events([], [])


class HistoryTooLong(ValueError):
    """A request's history past `HISTORY_CAP` items."""


@dataclass(slots=True)
class Query:
    vector: np.ndarray | None
    """None: nothing to search with (popularity answers)."""
    source: str
    unknown: int = 0
    """Ids of the request's history the store does not hold (dropped)."""
    items: frozenset[str] = frozenset()
    """The history's ids (stored and requested), left out of the results with the seen ones."""


@dataclass(frozen=True)
class Request:
    """One user of a recommend request."""

    user_id: str | None
    features: Mapping[str, Any] | None
    history: Events
    now: float | None = None
    """Epoch seconds the history is read as of; None: the time of the request."""


def check_history(history: Sequence[Any], user: str | None) -> None:
    if len(history) > HISTORY_CAP:
        who = f"user {user!r}" if user is not None else "a request"
        raise HistoryTooLong(
            f"history of {who} has {len(history)} items; at most {HISTORY_CAP} are taken"
        )


def user_queries(
    space: Space,
    requests: Sequence[Request],
    histories: Histories | None,
    users: UserRows | None,
) -> list[Query]:
    """The query of each request (see the module doc). `users`: the known users' rows
    (their declared features)."""
    model = space.model
    assert model is not None  # make_space checks that the two-tower space has one
    n = model.config.history
    sequence = model.config.sequence
    stored = [
        Events.of(histories.recent(r.user_id, n))
        if sequence and histories and r.user_id is not None
        else NO_EVENTS
        for r in requests
    ]
    vectors = ItemVectors.fetch(space, [*stored, *(r.history for r in requests)])
    held = vectors.rows
    out: list[Query] = []
    encode: list[tuple[Query, Events, dict[str, Any] | None, float]] = []
    clock = time.time()
    for request, events in zip(requests, stored, strict=True):
        asked = request.history.among(held)
        query = Query(
            None,
            "popularity",
            len(request.history) - len(asked),
            frozenset(events.ids + asked.ids),
        )
        if sequence:
            kept = events.among(held).then(asked, n)
            query.source = "two-tower" if events else "history" if kept else "features"
            at = clock if request.now is None else request.now
            encode.append((query, kept, _row(request, users), at))
        else:
            query.source, query.vector = _static_vector(space, request, asked, vectors)
        out.append(query)
    _sequence_vectors(space, encode, vectors)
    for query in out:
        if query.vector is None:
            query.source = "popularity"
    return out


@dataclass(frozen=True, slots=True)
class ItemVectors:
    """The item vectors of a batch's histories: one fetch, one matrix, a row per id."""

    rows: dict[str, int]
    matrix: np.ndarray

    @classmethod
    def fetch(cls, space: Space, histories: Sequence[Events]) -> ItemVectors:
        wanted = list(dict.fromkeys(i for h in histories for i in h.ids))
        if not wanted:
            return cls({}, np.zeros((0, space.dim), dtype=np.float32))
        found, matrix = space.failover.call("fetch", lambda s: s.fetch_vectors(wanted))
        return cls({i: n for n, i in enumerate(found)}, matrix)

    def of(self, events: Events) -> np.ndarray:
        """The events' item vectors, (len(events), dim)."""
        return self.matrix[
            np.fromiter(map(self.rows.__getitem__, events.ids), np.intp, len(events))
        ]


ROWS_KEPT = 1 << 16
"""Most known users' feature rows a `UserRows` keeps as dicts."""


class UserRows:
    """Known users' rows of the user table by id (their declared features), each made a
    dict at its first request and kept, up to `ROWS_KEPT` of them: a row read from the table
    through pandas cost about a tenth of a known user's sequence recommendation."""

    def __init__(self, users: pd.DataFrame) -> None:
        self._table = users.set_index("user_id", drop=False)
        self._kept: dict[str, dict[str, Any]] = {}

    def get(self, user_id: str) -> dict[str, Any] | None:
        """The user's row (not to be changed: it is shared), None for an unknown user."""
        row = self._kept.get(user_id)
        if row is None and user_id in self._table.index:
            row = self._table.loc[user_id].to_dict()
            if len(self._kept) < ROWS_KEPT:
                self._kept[user_id] = row
        return row


def _row(request: Request, users: UserRows | None) -> dict[str, Any] | None:
    """The user's feature row: a known user's from the user table, else the request's."""
    known = (
        users.get(request.user_id) if users is not None and request.user_id is not None else None
    )
    if known is not None:
        return known | {"user_id": request.user_id}
    if request.features is not None:
        return {**request.features, "user_id": request.user_id or ""}
    return None


def _sequence_vectors(
    space: Space,
    encode: Sequence[tuple[Query, Events, dict[str, Any] | None, float]],
    vectors: ItemVectors,
) -> None:
    """Each query's vector from its kept events and feature row, through the sequence tower
    in one pass for all the queries with a feature row and one for those without (16
    histories of 50 items take about 4x the time of one), in inference mode (no autograd
    bookkeeping: 6% less)."""
    model = space.model
    assert model is not None
    if not encode:  # a static model's queries
        return
    has_features = bool(model.towers.user.features)
    with_row = [e for e in encode if has_features and e[2] is not None]
    without = [e for e in encode if e[1] and not (has_features and e[2] is not None)]
    for group, rows in ((with_row, True), (without, False)):
        if not group:
            continue
        frame = pd.DataFrame([row for _, _, row, _ in group]) if rows else None
        histories = [_history(e, vectors) for _, e, _, _ in group]
        now = np.array([at for *_, at in group])
        with torch.inference_mode():
            found = model.history_vectors(histories, frame, now)
        for (query, *_), vector in zip(group, found, strict=True):
            query.vector = vector


def _history(events: Events, vectors: ItemVectors) -> tuple[np.ndarray, np.ndarray]:
    """Events as the sequence tower reads them: item vectors (L, dim), epoch seconds (L,)."""
    return vectors.of(events), np.array(events.times, dtype=np.float64)


def _static_vector(
    space: Space,
    request: Request,
    asked: Events,
    vectors: ItemVectors,
) -> tuple[str, np.ndarray | None]:
    model = space.model
    assert model is not None
    if request.user_id is not None and request.user_id in space.user_vectors:
        return "two-tower", space.user_vectors[request.user_id]
    if asked:
        mean = vectors.of(asked).mean(axis=0, dtype=np.float32)
        return "history", l2_normalize(mean[None], zero_rows="keep")[0]
    if request.features is not None:
        row = {**request.features, "user_id": request.user_id or ""}
        return "features", model.user_vectors(pd.DataFrame([row]))[0]
    return "popularity", None
