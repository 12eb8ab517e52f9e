"""The training-backed histories: order, ties and the cap on n."""

import pandas as pd

from embedrec.retrieval.history import Interaction, TrainingHistories, as_interactions


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


def test_bare_ids_become_interactions():
    assert as_interactions(["a", Interaction("b", 1.0)]) == [
        Interaction("a"),
        Interaction("b", 1.0),
    ]
