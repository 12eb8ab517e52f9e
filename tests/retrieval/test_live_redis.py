"""The Redis path, against a real redis-server: the consumer group applies each event once
(history equals a replay), dead-letters malformed ones without stopping, survives a kill -9
of a consumer (its pending entries claimed), and Redis going down (answers from the stored
vectors, no 5xx; the consumer resumes when it returns)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import StreamConfig
from embedrec.retrieval.events.histories import HistoryLimits
from embedrec.retrieval.events.models import InteractionEvent
from embedrec.retrieval.live.consumer import (
    BatchFailed,
    StreamConsumer,
    lag_count,
    pending_count,
)
from embedrec.retrieval.live.service import Live
from embedrec.stores.errors import StoreUnavailable
from embedrec.testing.redis_server import RedisServer
from tests.retrieval.conftest import Data, make_recommender, serving, store_uri
from tests.retrieval.live_redis import assert_replayed, config_text, redis_server, xadd

__all__ = ["redis_server"]  # the fixture, used by name


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("live-redis")


@pytest.fixture(scope="module")
def recommender(data: Data, root: Path) -> Iterator[Recommender]:
    rec = make_recommender(data, root)
    yield rec
    rec.close()


def _events(data: Data, n: int, seed: int = 0, start: int = 0) -> list[dict]:
    rng = random.Random(seed)
    users = [str(u) for u in data.users["user_id"][:20]]
    now = time.time()
    return [
        {"event_id": f"s{seed}-{start + i}", "user_id": rng.choice(users),
         "item_id": rng.choice(data.item_ids), "timestamp": now - rng.uniform(0, 600)}
        for i in range(n)
    ]  # fmt: skip


def _drain(consumer: StreamConsumer, live: Live, until: float = 30) -> None:
    """Consumer rounds until every entry of the stream is delivered and acknowledged."""
    deadline = time.monotonic() + until
    client, settings = live.client, live.settings
    while consumer.step() or pending_count(client, settings) or lag_count(client, settings):
        assert time.monotonic() < deadline, "the consumer did not catch up"


def test_each_event_once_and_dead_letters(recommender, redis_server, data) -> None:
    config = StreamConfig(redis=redis_server.url, stream="t1", prefix="t1", history_size=8)
    live = Live(recommender, config, consume=True)
    events = _events(data, 300, seed=1)
    entries = [*events[:150], b"{not json", {"event_id": "x", "user_id": "1"}, *events[150:]]
    entries += events[:40]  # delivered again: no effect
    xadd(live.client, "t1", entries)
    assert live.consumer is not None
    live.consumer.ensure_group()
    _drain(live.consumer, live)
    users = sorted({e["user_id"] for e in events})
    assert_replayed(live.histories, events, users, HistoryLimits(8))
    dead = live.client.xrange("t1:dead")
    assert len(dead) == 2
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert "not JSON" in reasons[0] and "item_id" in reasons[1]
    assert live.stats.duplicates._value.get() == 40
    live.close()


def test_a_poison_entry_is_dead_lettered_after_max_failures(
    recommender, redis_server, data, monkeypatch
) -> None:
    """An event that hits a bug (not a bad event, not an outage) holds back no other event,
    and goes to the dead-letter stream with its error once it has failed max_failures
    times, counted on /metrics; the old consumer left its batch pending for ever."""
    config = StreamConfig(redis=redis_server.url, stream="t5", prefix="t5", max_failures=3)
    live = Live(recommender, config, consume=True)
    assert live.consumer is not None
    events = _events(data, 60, seed=5)
    poison = {**events[0], "event_id": "poison"}
    add = live.histories.add

    def buggy(batch):  # a bug that only this event triggers
        if any(e.event_id == "poison" for e in batch):
            raise KeyError("a bug")
        return add(batch)

    monkeypatch.setattr(live.histories, "add", buggy)
    xadd(live.client, "t5", [*events[:30], poison, *events[30:]])
    live.consumer.ensure_group()
    failed, deadline = 0, time.monotonic() + 30
    while True:
        try:
            handled = live.consumer.step()
        except BatchFailed:
            failed += 1
            live.consumer._own_backlog = True  # as run() does after an error
            continue
        idle = not pending_count(live.client, live.settings)
        if not handled and idle and not lag_count(live.client, live.settings):
            break
        assert time.monotonic() < deadline, "the poison entry stayed pending"
    assert failed == 3
    users = sorted({e["user_id"] for e in events})
    assert_replayed(live.histories, events, users, HistoryLimits())
    dead = live.client.xrange("t5:dead")
    assert len(dead) == 1 and b'"poison"' in dead[0][1][b"event"]
    reason = dead[0][1][b"reason"].decode()
    assert "failed 3 times" in reason and "KeyError" in reason and "a bug" in reason
    metrics = generate_latest(live.stats.registry).decode()
    assert 'embedrec_events_rejected_total{reason="poison"} 1.0' in metrics
    assert not live.client.hlen("t5:failures") and not live.client.hlen("t5:errors")
    live.close()


def test_outages_while_applying_again_never_dead_letter(
    recommender, redis_server, data, monkeypatch
) -> None:
    """Entries delivered again are marked before they are applied; a store outage takes the
    marks back, so more outages than max_failures dead-letter nothing."""
    config = StreamConfig(redis=redis_server.url, stream="t7", prefix="t7", max_failures=2)
    live = Live(recommender, config, consume=True)
    assert live.consumer is not None
    events = _events(data, 30, seed=7)
    add, outages = live.histories.add, []

    def down(batch):
        if len(outages) < 5:
            outages.append(len(batch))
            raise StoreUnavailable("the store is down")
        return add(batch)

    monkeypatch.setattr(live.histories, "add", down)
    xadd(live.client, "t7", events)
    live.consumer.ensure_group()
    while len(outages) < 5:  # the first delivery, then four deliveries again
        try:
            live.consumer.step()
        except StoreUnavailable:
            live.consumer._own_backlog = True  # as run() does after an error
        assert all(int(n) <= 0 for n in live.client.hvals("t7:failures"))
    assert outages == [30] * 5
    _drain(live.consumer, live)
    assert live.client.xlen("t7:dead") == 0
    assert live.histories.applied_total() == len(events)
    live.close()


def _spawn(config: Path, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "embedrec.cli", "stream", str(config), "--consumer", name]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stream_config(root: Path, data: Data, url: str, name: str, **stream: object) -> Path:
    """A serve config for `embedrec stream` over the module's stores and users."""
    model = data.model.save(root / "model.pt")
    data.users.to_csv(root / "users.csv", index=False)
    data.ratings.to_csv(root / "ratings.csv", index=False)
    config = root / f"{name}.toml"
    config.write_text(config_text(root, url, store_uri("faiss", root / "tt"), model, **stream))
    return config


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(
    recommender, redis_server, data, root
) -> None:
    config = _stream_config(root, data, redis_server.url, "kill", stream="t2", prefix="t2",
                            batch=25, claim_idle_s=1.0, history_size=10)  # fmt: skip
    events = _events(data, 4000, seed=2)
    live = Live(recommender, StreamConfig(redis=redis_server.url, stream="t2", prefix="t2",
                batch=25, claim_idle_s=1.0, history_size=10), consume=True)  # fmt: skip
    assert live.consumer is not None
    live.consumer.ensure_group()
    for kill in range(2):  # each victim finds 2,000 new entries (and claims the last one's)
        xadd(live.client, "t2", events[2000 * kill : 2000 * (kill + 1)])
        victim = _spawn(config, f"victim-{kill}")
        name = f"victim-{kill}".encode()
        start = time.monotonic()
        while name not in _owners(live):  # kill it as soon as it holds entries unacknowledged
            assert victim.poll() is None, victim.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() - start < 60, "the victim never read"
            time.sleep(0.001)
        time.sleep(random.uniform(0, 0.02))  # before, while or after it applies a batch
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    _drain(live.consumer, live, until=60)  # claims the victims' entries after 1 s idle
    users = sorted({e["user_id"] for e in events})
    assert_replayed(live.histories, events, users, HistoryLimits(10))
    assert live.histories.applied_total() == len(events)  # none lost, none applied twice
    assert live.client.xlen("t2:dead") == 0
    live.close()


CRASHER = """
import os, signal, sys
from embedrec.retrieval.live.applier import EventApplier
apply = EventApplier.apply
def crashing(self, events, source):
    if any(e.event_id == "crash" for e in events):
        os.kill(os.getpid(), signal.SIGKILL)  # as a crash in native code ends it
    return apply(self, events, source)
EventApplier.apply = crashing
from embedrec.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_event_that_ends_the_process_is_dead_lettered(
    recommender, redis_server, data, root
) -> None:
    """An event whose apply kills the consumer's process raises nothing to count; it is
    still dead-lettered after max_failures deaths, and the events delivered with it are
    applied once each. The old consumer died on it for ever."""
    stream = {"stream": "t6", "prefix": "t6", "batch": 40, "max_failures": 3}
    config = _stream_config(root, data, redis_server.url, "crash", **stream)
    live = Live(recommender, StreamConfig(redis=redis_server.url, **stream), consume=True)
    assert live.consumer is not None
    live.consumer.ensure_group()
    events = _events(data, 200, seed=6)
    xadd(live.client, "t6", [*events[:90], {**events[0], "event_id": "crash"}, *events[90:]])
    deaths, deadline = 0, time.monotonic() + 240
    cmd = [sys.executable, "-c", CRASHER, "stream", str(config), "--consumer", "crasher"]

    def settled() -> bool:  # the entry dead-lettered and nothing left pending
        return bool(live.client.xlen("t6:dead")) and not pending_count(live.client, live.settings)

    while not settled():
        with _running(cmd) as crasher:
            while crasher.poll() is None and not settled():
                assert time.monotonic() < deadline, f"still pending after {deaths} deaths"
                time.sleep(0.05)
            if crasher.poll() is not None:
                err = crasher.stderr.read().decode()  # type: ignore[union-attr]
                assert crasher.returncode == -signal.SIGKILL, err
                deaths += 1
    _drain(live.consumer, live)
    assert deaths == 1 + 3  # its first delivery (no mark yet), then max_failures marks
    dead = live.client.xrange("t6:dead")
    assert len(dead) == 1 and b'"crash"' in dead[0][1][b"event"]
    assert "failed 3 times: the consumer's process ended" in dead[0][1][b"reason"].decode()
    users = sorted({e["user_id"] for e in events})
    assert_replayed(live.histories, events, users, HistoryLimits())
    assert live.histories.applied_total() == len(events)
    assert not live.client.hlen("t6:failures") and not live.client.hlen("t6:errors")
    live.close()


@contextlib.contextmanager
def _running(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A process of `cmd`, stopped on the way out if it still runs (a failing test too)."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()


def test_died_after_applying_before_acknowledging(recommender, redis_server, data) -> None:
    """The window kill -9 may hit: a batch applied, its acknowledgement never sent. The
    consumer that claims it applies nothing twice."""
    settings = {"redis": redis_server.url, "stream": "t4", "prefix": "t4", "claim_idle_s": 0.05}
    first = Live(recommender, StreamConfig(**settings), consume=True, consumer="first")
    second = Live(recommender, StreamConfig(**settings), consume=True, consumer="second")
    assert first.consumer is not None and second.consumer is not None
    events = _events(data, 200, seed=4)
    first.consumer.ensure_group()
    xadd(first.client, "t4", events)
    delivered = first.consumer._read(">", block=None)
    assert len(delivered) == 200
    first.applier.apply([InteractionEvent.model_validate_json(f[b"event"]) for _, f in delivered],
                        "stream")  # fmt: skip
    time.sleep(0.1)
    _drain(second.consumer, second)
    assert second.histories.applied_total() == 200
    assert pending_count(second.client, second.settings) == 0
    users = sorted({e["user_id"] for e in events})
    assert_replayed(second.histories, events, users, HistoryLimits())
    first.close()
    second.close()


def _owners(live: Live) -> set[bytes]:
    return {c["name"] for c in live.client.xpending("t2", "embedrec")["consumers"]}


def test_redis_down_then_back(recommender, data, tmp_path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    config = StreamConfig(redis=server.url, stream="t3", prefix="t3", block_s=0.2)
    live = Live(recommender, config, consume=True)
    live.start()
    user = str(data.users["user_id"].iloc[3])
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMBEDREC_API_KEY", raising=False)
        app = create_app(recommender, live=live)
    try:
        with serving(app) as base, httpx.Client(base_url=base, timeout=30) as http:
            first = http.post("/recommend", json={"user_id": user}).json()
            assert first["source"] == "two-tower"
            server.stop()
            down = http.post("/recommend", json={"user_id": user})
            assert down.status_code == 200 and down.json()["source"] == "stored-vector"
            assert [h["id"] for h in down.json()["results"]] == [h["id"] for h in first["results"]]
            unknown = http.post("/recommend", json={"user_id": "nobody"}).json()
            assert unknown["source"] == "popularity"
            event = {"event_id": "d1", "user_id": user, "item_id": first["results"][0]["id"],
                     "timestamp": time.time()}  # fmt: skip
            refused = http.post("/events", json={"events": [event]})
            assert refused.status_code == 503
            time.sleep(0.5)  # the consumer meets the outage
            server.start()  # same port and folder: the stream and group are back
            assert http.post("/events", json={"events": [event]}).status_code == 202
            deadline = time.monotonic() + 15
            while True:
                body = http.post("/recommend", json={"user_id": user}).json()
                if first["results"][0]["id"] not in [h["id"] for h in body["results"]]:
                    break
                assert time.monotonic() < deadline, "the consumer did not resume"
                time.sleep(0.05)
            assert body["source"] == "two-tower"
    finally:
        live.close()
        server.stop()
