"""Live histories in Redis (`[stream] redis = "redis://HOST:PORT/DB"`), shared by every
worker and host; the password, if any, comes from `EMBEDREC_REDIS_PASSWORD`.

Keys, under the configured prefix P:
- `P:h:USER`: a sorted set, member `ITEM<US>EVENT_ID`, score the event time; trimmed to the
  size and age limits as each event lands;
- `P:a:EVENT_ID`: the event was applied (kept as long as an entry may live: a redelivered
  event past that age would be dropped as too old anyway);
- `P:p:ITEM`: interactions held until the item exists;
- `P:applied`: how many interactions were applied in all (each event once).

A batch is applied by one Lua script, so each event's marker and history entry are written
together or not at all: applying is idempotent on event id whatever fails in between.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from embedrec.common.settings import redis_password
from embedrec.retrieval.events.histories import HistoryLimits, HistoryUnavailable, LiveHistories
from embedrec.retrieval.events.models import InteractionEvent
from embedrec.retrieval.history import Histories, Interaction
from embedrec.stores.errors import ConfigError

SEP = "\x1f"
NO_AGE_TTL_S = 7 * 86_400
"""How long an applied marker lives when histories have no age limit."""
TIMEOUT_S = 0.5
"""Longest wait on Redis from the request path: past it the service answers without it."""

ADD = """
local size, oldest, ttl, hist_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local new = 0
for i = 0, (#KEYS - 1) / 2 - 1 do
  local hist = KEYS[2 * i + 2]
  local item, id, ts = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  if redis.call('SET', KEYS[2 * i + 1], '1', 'NX', 'EX', ttl) then
    new = new + 1
    if tonumber(ts) >= oldest then
      redis.call('ZADD', hist, ts, item .. '\\31' .. id)
      redis.call('ZREMRANGEBYRANK', hist, 0, -size - 1)
      redis.call('ZREMRANGEBYSCORE', hist, '-inf', '(' .. ARGV[2])
      if hist_ttl ~= '0' then redis.call('EXPIRE', hist, hist_ttl) end
    end
  end
end
if new > 0 then redis.call('INCRBY', KEYS[#KEYS], new) end
return new
"""


def connect(url: str, timeout_s: float = TIMEOUT_S) -> redis.Redis:
    """A client for `url`; a password in the URL is refused (it comes from the environment)."""
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise ConfigError(
            "[stream] redis: put no credentials in the URL; set EMBEDREC_REDIS_PASSWORD"
        )
    return redis.Redis.from_url(
        url,
        password=redis_password(),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=False,
    )


@contextmanager
def unavailable_as(what: str) -> Iterator[None]:
    """Redis's own errors as `HistoryUnavailable`, saying what could not be done."""
    try:
        yield
    except redis.RedisError as exc:
        raise HistoryUnavailable(f"Redis: cannot {what}: {exc}") from exc


class RedisHistories(LiveHistories):
    def __init__(
        self,
        client: redis.Redis,
        base: Histories | None = None,
        limits: HistoryLimits | None = None,
        prefix: str = "embedrec",
    ) -> None:
        super().__init__(base, limits or HistoryLimits())
        self.client = client
        self.prefix = prefix
        self._add = client.register_script(ADD)
        age = self.limits.max_age_s
        self._ttl = str(int(age) + 60 if age is not None else NO_AGE_TTL_S)
        self._hist_ttl = str(int(age) + 60 if age is not None else 0)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def add(self, events: Sequence[InteractionEvent]) -> int:
        if not events:
            return 0
        keys: list[str] = []
        args: list[Any] = [self.limits.size, repr(self.limits.oldest(time.time()))]
        args += [self._ttl, self._hist_ttl]
        for e in events:
            keys += [self._key("a", e.event_id), self._key("h", e.user_id)]
            args += [e.item_id, e.event_id, repr(e.timestamp)]
        keys.append(f"{self.prefix}:applied")
        with unavailable_as("apply interactions"):
            return int(self._add(keys=keys, args=args))

    def applied_total(self) -> int:
        """Interactions applied by every consumer so far: one per event, never two."""
        with unavailable_as("read the applied count"):
            return int(self.client.get(f"{self.prefix}:applied") or 0)

    def live(self, user_id: str) -> list[Interaction]:
        oldest = self.limits.oldest(time.time())
        with unavailable_as("read a history"):
            rows = self.client.zrange(
                self._key("h", user_id), "+inf", oldest, desc=True, byscore=True,
                offset=0, num=self.limits.size, withscores=True,
            )  # fmt: skip
        return [Interaction(m.decode().split(SEP, 1)[0], float(s)) for m, s in reversed(rows)]

    def park(self, events: Sequence[InteractionEvent]) -> None:
        with unavailable_as("hold interactions"), self.client.pipeline() as pipe:
            for e in events:
                pipe.rpush(self._key("p", e.item_id), e.model_dump_json())
                pipe.expire(self._key("p", e.item_id), int(self._ttl))
            pipe.execute()

    def release(self, item_id: str) -> list[InteractionEvent]:
        key = self._key("p", item_id)
        with unavailable_as("release held interactions"), self.client.pipeline() as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            held, _ = pipe.execute()
        return [InteractionEvent.model_validate_json(raw) for raw in held]
