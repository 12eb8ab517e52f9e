"""Two processes over one FAISS store, as two workers (or `embedrec stream` beside `embedrec
serve`) are: each consumer's catalogue events reach the other process within `refresh_s`,
and neither is refused the store's folder (docs/realtime.md)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from embedrec.retrieval.config import StreamConfig
from embedrec.retrieval.live.consumer import lag_count, pending_count
from embedrec.retrieval.live.service import Live
from embedrec.stores import open_existing
from tests.retrieval.conftest import Data, make_recommender, store_uri
from tests.retrieval.live_redis import config_text, redis_server, xadd

__all__ = ["redis_server"]  # the fixture, used by name


def _added(data: Data, ids: range) -> list[dict]:
    return [
        {"event_id": f"w-{n}", "op": "added", "item_id": f"w-{n}",
         "fields": dict(data.item_meta[n % len(data.item_meta)])}
        for n in ids
    ]  # fmt: skip


def _until(done: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_two_processes_write_and_follow_one_faiss_store(data, redis_server, tmp_path) -> None:
    rec = make_recommender(data, tmp_path)
    for name in rec.spaces:  # as a service opens them: readers, no writer's lock held
        rec.space(name).failover.primary.release()
    model = data.model.save(tmp_path / "model.pt")
    data.users.to_csv(tmp_path / "users.csv", index=False)
    data.ratings.to_csv(tmp_path / "ratings.csv", index=False)
    settings = {"stream": "t6", "prefix": "t6", "batch": 1, "refresh_s": 0.2}
    config = tmp_path / "other.toml"
    tt = store_uri("faiss", tmp_path / "tt")
    config.write_text(config_text(tmp_path, redis_server.url, tt, model, **settings))
    live = Live(rec, StreamConfig(redis=redis_server.url, **settings), consume=True)
    assert live.consumer is not None
    live.consumer.ensure_group()
    cmd = [sys.executable, "-m", "embedrec.cli", "stream", str(config), "--consumer", "other"]
    other = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client, stream = live.client, live.settings
    assert client is not None and stream is not None

    def caught_up() -> bool:
        assert other.poll() is None, other.stderr.read().decode()  # type: ignore[union-attr]
        return not pending_count(client, stream) and not lag_count(client, stream)

    def held(ids: list[str]) -> bool:
        return len(rec.space("two-tower").failover.primary.fetch(ids)) == len(ids)

    try:
        xadd(client, "t6", _added(data, range(6)))
        _until(caught_up, "the other process did not apply the events")  # only it consumes
        live.start()  # our consumer, and the follower of the store
        first = [f"w-{n}" for n in range(6)]
        _until(lambda: held(first), "the other process's events never reached this one", 10)
        xadd(client, "t6", _added(data, range(6, 20)))  # both consume, in turns
        every = [f"w-{n}" for n in range(20)]
        _until(lambda: caught_up() and held(every), "the events did not all land", 60)
        assert client.xlen("t6:dead") == 0  # no writer was refused the folder
        with open_existing(tt) as store:
            assert len(store.fetch(every)) == 20 and store.count() == len(data.item_ids) + 20
    finally:
        other.kill()
        other.wait()
        live.close()
        rec.close()
