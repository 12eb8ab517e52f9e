"""Events as models (each rejection with its reason) and the in-process live histories:
bounded to N and by age, ordered by event time, idempotent on event id."""

from __future__ import annotations

import random
import time

from embedrec.retrieval.events.histories import HistoryLimits, MemoryHistories
from embedrec.retrieval.events.models import (
    CatalogueEvent,
    InteractionEvent,
    Rejection,
    parse_event,
    parse_events,
)
from embedrec.retrieval.history import Interaction, TrainingHistories


def _event(n: int, user: str = "u1", ts: float | None = None) -> InteractionEvent:
    at = ts if ts is not None else time.time() - 100 + n
    return InteractionEvent(event_id=f"e{n}", user_id=user, item_id=f"i{n}", timestamp=at)


def test_interaction_timestamps_as_epoch_or_iso() -> None:
    a = parse_event({"event_id": "1", "user_id": "u", "item_id": "i", "timestamp": 1.7e9})
    b = parse_event(
        {"event_id": "2", "user_id": "u", "item_id": "i", "timestamp": "2023-11-14T22:13:20"}
    )
    assert isinstance(a, InteractionEvent) and a.timestamp == 1.7e9 and a.weight == 1.0
    assert isinstance(b, InteractionEvent) and b.timestamp == 1_700_000_000.0


def test_each_rejection_says_why() -> None:
    raws = [
        {"event_id": "1", "user_id": "u", "item_id": "i", "timestamp": 1.0},
        {"event_id": "2", "user_id": "u", "timestamp": 1.0},
        {"event_id": "3", "user_id": "u", "item_id": "i", "timestamp": "yesterday"},
        {"event_id": "4", "user_id": "u", "item_id": "i", "timestamp": float("nan")},
        {"event_id": "5", "op": "resized", "item_id": "i"},
        {"event_id": "6", "op": "added", "item_id": "i", "fields": {"year": {"nested": 1}}},
        {"event_id": "7", "user_id": "u\n", "item_id": "i", "timestamp": 1.0},
        "not an object",
    ]
    events, rejected = parse_events(raws)
    assert [e.event_id for e in events] == ["1"]
    reasons = {r.index: r.reason for r in rejected}
    assert "item_id" in reasons[1] and "Field required" in reasons[1]
    assert "timestamp" in reasons[2] and "ISO-8601" in reasons[2]
    assert "timestamp" in reasons[3]
    assert "op" in reasons[4]
    assert "fields" in reasons[5]
    assert "user_id" in reasons[6]
    assert reasons[7].startswith("an event is a JSON object")
    assert all(isinstance(r, Rejection) for r in rejected)
    assert [r.event_id for r in rejected][:2] == ["2", "3"]


def test_catalogue_event() -> None:
    event = parse_event(
        {
            "event_id": "c",
            "op": "added",
            "item_id": "9",
            "fields": {"genres": ["Drama"]},
            "text": "A film",
        }
    )
    assert isinstance(event, CatalogueEvent) and event.fields == {"genres": ["Drama"]}


def test_bounded_to_n_and_idempotent() -> None:
    live = MemoryHistories(limits=HistoryLimits(size=3, max_age_s=None))
    events = [_event(n) for n in range(5)]
    assert live.add(events) == 5
    assert live.add(events[:2]) == 0  # applied before: no effect
    assert [i.item_id for i in live.live("u1")] == ["i2", "i3", "i4"]


def test_age_limit_drops_old_events() -> None:
    live = MemoryHistories(limits=HistoryLimits(size=10, max_age_s=60))
    now = time.time()
    live.add([_event(1, ts=now - 3600), _event(2, ts=now - 1)])
    assert [i.item_id for i in live.live("u1")] == ["i2"]


def test_history_equals_a_replay_in_any_order() -> None:
    events = [_event(n, user=f"u{n % 3}") for n in range(60)]
    ordered = MemoryHistories(limits=HistoryLimits(size=7))
    ordered.add(events)
    shuffled = MemoryHistories(limits=HistoryLimits(size=7))
    random.Random(1).shuffle(events)
    for start in range(0, 60, 9):  # in batches, some twice
        shuffled.add(events[start : start + 9] + events[:3])
    for user in ("u0", "u1", "u2"):
        assert shuffled.live(user) == ordered.live(user)
        assert len(ordered.live(user)) == 7


def test_recent_layers_live_over_training() -> None:
    import pandas as pd

    ratings = pd.DataFrame(
        {"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [1.0, 2.0]}
    )
    live = MemoryHistories(TrainingHistories(ratings), HistoryLimits(size=10))
    live.add([_event(1)])
    got = live.recent("u1", 2)
    assert [i.item_id for i in got] == ["b", "i1"]
    assert isinstance(got[0], Interaction) and got[0].timestamp == 2.0
