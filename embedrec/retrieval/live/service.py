"""`Live`: the event path of one process, as `[stream]` configures it. It puts live
histories in front of the recommender's own (in Redis, or in process), applies events
(`accept`, what `POST /events` calls), and with Redis runs a stream consumer in a thread;
another thread loads into the FAISS stores it serves what other processes' consumers
committed to them (catalogue.py).

Without Redis (the embedded default) `POST /events` applies events at once, in this process:
serve it with one worker. With Redis, `POST /events` appends them to the stream (so that
they are applied once, by one consumer of the group, and survive a restart) and answers
before they are applied.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import StreamConfig
from embedrec.retrieval.events.histories import HistoryLimits, LiveHistories, MemoryHistories
from embedrec.retrieval.events.models import Rejection, parse_events
from embedrec.retrieval.events.stats import LiveStats
from embedrec.retrieval.live.applier import EventApplier
from embedrec.stores.errors import StoreError
from embedrec.stores.faiss.store import FaissStore

if TYPE_CHECKING:
    import redis

    from embedrec.retrieval.live.consumer import StreamConsumer, StreamSettings

log = logging.getLogger("embedrec.stream")
READ_SLACK_S = 2.0
"""How much longer than its blocking read the consumer waits on Redis before giving up."""


@dataclass(frozen=True)
class Accepted:
    accepted: int
    rejected: list[Rejection]

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": len(self.rejected),
            "rejections": [r.to_json() for r in self.rejected],
        }


class Live:
    def __init__(
        self,
        recommender: Recommender,
        config: StreamConfig,
        *,
        consume: bool,
        consumer: str | None = None,
    ) -> None:
        """Live histories over `recommender`'s (set as its `histories`); with Redis and
        `consume`, a consumer (named `consumer`, default host-pid) that `start` runs."""
        self.config = config
        self.recommender = recommender
        self.stats = LiveStats()
        base = recommender.histories
        if isinstance(base, LiveHistories):
            base = base.base
        limits = HistoryLimits(config.history_size, config.history_max_age_s)
        self.histories: LiveHistories = MemoryHistories(base, limits)
        self.client: redis.Redis | None = None
        self.settings: StreamSettings | None = None
        self.consumer: StreamConsumer | None = None
        if config.redis is not None:
            self._use_redis(config.redis, base, limits, consume, consumer or "")
        self.histories.stats = self.stats
        recommender.histories = self.histories
        self.applier = EventApplier(recommender, self.histories, self.stats, config.refresh_s)
        if self.settings is not None and consume:
            # a client of its own: its reads block longer than a request waits on Redis
            reader = self._connect(config.redis, timeout_s=config.block_s + READ_SLACK_S)
            self.consumer = self._consumer_class(reader, self.applier, self.settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _use_redis(
        self, url: str, base: Any, limits: HistoryLimits, consume: bool, name: str
    ) -> None:
        # here, not at the top: redis is the stream extra, needed only with [stream] redis
        from embedrec.retrieval.events.redis_histories import RedisHistories, connect
        from embedrec.retrieval.live.consumer import (
            StreamConsumer,
            StreamSettings,
            append,
            lag_count,
            pending_count,
        )

        c = self.config
        self._connect, self._consumer_class, self._append = connect, StreamConsumer, append
        self.client = connect(url)
        self.histories = RedisHistories(self.client, base, limits, c.prefix)
        self.settings = StreamSettings(
            stream=c.stream, group=c.group, batch=c.batch, block_s=c.block_s,
            claim_idle_s=c.claim_idle_s, max_failures=c.max_failures, consumer=name,
        )  # fmt: skip
        self.stats.watch_stream(
            partial(pending_count, self.client, self.settings),
            partial(lag_count, self.client, self.settings),
        )

    def start(self) -> None:
        """Run the consumer (with Redis) and the follower of FAISS stores, in threads."""
        if self._threads:
            return
        if self.consumer is not None:
            self._threads.append(threading.Thread(
                target=self.consumer.run, args=(self._stop,), name="embedrec-stream", daemon=True
            ))  # fmt: skip
        self._threads.append(threading.Thread(target=self._follow, name="embedrec-follow",
                                              daemon=True))  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _follow(self) -> None:
        """Every `refresh_s`, load into each FAISS store this process serves what other
        processes committed to it (their consumers' catalogue events; catalogue.py)."""
        while not self._stop.wait(self.config.refresh_s):
            for name in self.recommender.spaces:
                store = self.recommender.space(name).failover.primary
                if isinstance(store, FaissStore):
                    try:
                        store.sync()
                    except StoreError as exc:  # a commit being replaced: the next round
                        log.warning("%s: cannot load the latest commit: %s", store.uri, exc)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.consumer is not None:
            self.consumer.client.close()
        if self.client is not None:
            self.client.close()

    def accept(self, raws: list[Any]) -> Accepted:
        """Validate `raws`; apply the valid ones (embedded) or append them to the stream
        (Redis). Raises `HistoryUnavailable` (a 503) when that cannot be done now."""
        events, rejected = parse_events(raws)
        if rejected:
            self.stats.rejected.labels("invalid").inc(len(rejected))
        if self.client is None:
            refused = self.applier.apply(events, "http").refused
            where = {r.get("event_id"): n for n, r in enumerate(raws) if isinstance(r, dict)}
            rejected += [Rejection(where[eid], eid, why) for eid, why in refused.items()]
            return Accepted(len(events) - len(refused), sorted(rejected, key=_order))
        self._append(self.client, self.config.stream, events)
        return Accepted(len(events), rejected)


def _order(rejection: Rejection) -> int:
    return rejection.index
