"""`RecommendBatcher`: the `/recommend` calls answered on the event loop that arrive
together, answered as one `Recommender.recommend_batch`.

Calls queue until the loop has run everything that was ready when the first one queued (the
other requests read in the same turn of the loop), then each group of calls with the same
`k` and `exclude_seen` is answered together, at most `MAX_BATCH` at a time: one store fetch
for their histories' items, one pass of the sequence tower over all their histories, one
search. An isolated request waits one turn of the loop; under load, the requests that
queued behind the one being answered share the next pass instead of each paying the tower's
per-operation overhead (measured in benchmarks/load_test.py). A batch that raises is
answered again call by call, so that a bad request's error (a `FeatureError`, a store that
failed) reaches that request alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from embedrec.retrieval.client import Recommender, Results
from embedrec.retrieval.history import Interaction

MAX_BATCH = 16
"""Most calls in one `recommend_batch`: the tower's pass over 16 histories of 50 items costs
about 4x one history's on one core, over 32 about 11x (its matrices outgrow the caches)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request's part of a `recommend_batch`."""

    user_id: str | None
    features: Mapping[str, Any] | None
    history: Sequence[str | Interaction] | None
    now: float | None
    answer: asyncio.Future[Results]


class RecommendBatcher:
    """Unfiltered `/recommend` calls of one app, batched on its event loop."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self._queued: dict[tuple[int, bool], list[Call]] = {}

    async def recommend(
        self,
        user_id: str | None,
        k: int,
        *,
        exclude_seen: bool,
        features: Mapping[str, Any] | None,
        history: Sequence[str | Interaction] | None,
        now: float | None = None,
    ) -> Results:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        call = Call(user_id, features, history, now, loop.create_future())
        self._queued.setdefault((k, exclude_seen), []).append(call)
        return await call.answer

    def _flush(self) -> None:
        queued, self._queued = self._queued, {}
        for (k, exclude_seen), calls in queued.items():
            for start in range(0, len(calls), MAX_BATCH):
                self._answer(calls[start : start + MAX_BATCH], k, exclude_seen)

    def _answer(self, calls: Sequence[Call], k: int, exclude_seen: bool) -> None:
        calls = [c for c in calls if not c.answer.done()]  # a cancelled one: client gone
        if not calls:
            return
        try:
            results = self.recommender.recommend_batch(
                [c.user_id for c in calls],
                k,
                exclude_seen=exclude_seen,
                features=[c.features for c in calls],
                history=[c.history for c in calls],
                now=[c.now for c in calls],
            )
        except Exception as exc:
            if len(calls) == 1:
                calls[0].answer.set_exception(exc)
            else:
                for call in calls:
                    self._answer([call], k, exclude_seen)
            return
        for call, result in zip(calls, results, strict=True):
            call.answer.set_result(result)
