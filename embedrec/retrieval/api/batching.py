"""`RecommendBatcher`: the `/recommend` calls answered on the event loop that arrive
together, answered as one `Recommender.recommend_batch`.

Calls queue until a turn of the loop passes in which no other call queued (at most
`WAIT_TURNS` turns and `MAX_BATCH` calls), then each group of calls with the same `k` and
`exclude_seen` is answered together, at most `MAX_BATCH` at a time: one store fetch for
their histories' items, one pass of the sequence tower over all their histories, one search.
An isolated request waits two turns of the loop; under load, the requests that queued behind
the one being answered share the next pass instead of each paying the tower's per-operation
overhead, and so do those whose clients send them while the queue forms (the clients
answered last, as the answers go out one by one; measured in benchmarks/load_test.py). A
batch that raises is answered again call by call, so that a bad request's error (a
`FeatureError`, a store that failed) reaches that request alone.
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


WAIT_TURNS = 4
"""Most turns of the event loop a queue waits for more calls (see `RecommendBatcher._flush`)."""


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
        self._count = 0

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
            loop.call_soon(self._flush, 0, 0)
        call = Call(user_id, features, history, now, loop.create_future())
        self._queued.setdefault((k, exclude_seen), []).append(call)
        self._count += 1
        return await call.answer

    def _flush(self, seen: int, turns: int) -> None:
        """Answer the queue, or, while calls keep arriving (more than `seen` queued since
        the last turn; at most `WAIT_TURNS` turns, fewer than `MAX_BATCH` calls), look again
        after one more turn of the loop."""
        if seen < self._count < MAX_BATCH and turns < WAIT_TURNS:
            asyncio.get_running_loop().call_soon(self._flush, self._count, turns + 1)
            return
        self._count = 0
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
