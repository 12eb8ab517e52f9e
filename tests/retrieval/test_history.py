"""The training-backed histories: order, ties and the cap on n."""

import math

import pandas as pd

from embedrec.retrieval.history import Events, Interaction, TrainingHistories


def test_recent_is_oldest_first_with_ties_in_table_order():
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 1],
            "item_id": ["c", "a", "x", "b", "d"],
            "timestamp": [30, 10, 5, 30, 20],
        }
    )
    h = TrainingHistories(ratings)
    assert [i.item_id for i in h.recent("1", 10)] == ["a", "d", "c", "b"]
    assert h.recent("1", 2) == [Interaction("c", 30.0), Interaction("b", 30.0)]
    assert h.recent("2", 5) == [Interaction("x", 5.0)]
    assert h.recent("nobody", 5) == []
    assert h.recent("1", 0) == []


def test_without_timestamps_table_order_and_no_time():
    h = TrainingHistories(pd.DataFrame({"user_id": ["u", "u"], "item_id": [2, 1]}))
    assert h.recent("u", 5) == [Interaction("2"), Interaction("1")]


def test_events_of_ids_and_interactions():
    bare = Events.of(["a", "b"])
    assert bare.ids == ["a", "b"] and all(math.isnan(t) for t in bare.times)
    mixed = Events.of(["a", Interaction("b", 1.0), Interaction("c"), 7])
    assert mixed.ids == ["a", "b", "c", "7"]
    assert [None if math.isnan(t) else t for t in mixed.times] == [None, 1.0, None, None]


def test_events_among_and_then_keep_order_and_times():
    events = Events(["a", "b", "c"], [1.0, 2.0, 3.0])
    held = events.among({"a", "c"})
    assert (held.ids, held.times) == (["a", "c"], [1.0, 3.0])
    assert events.among({"a", "b", "c"}) is events
    last = held.then(Events(["d"], [4.0]), 2)
    assert (last.ids, last.times) == (["c", "d"], [3.0, 4.0])
