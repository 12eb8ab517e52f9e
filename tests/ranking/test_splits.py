import numpy as np
import pandas as pd
import pytest

from embedrec.ranking.splits import (
    SPLITS,
    chronological,
    cold_item_split,
    describe_split,
    describe_validation,
    leave_last_out,
    make_split,
    random_split,
    stratified_split,
    temporal_split,
    validation_split,
)


def ratings(pairs: list[tuple[str, str]], timestamps: list[int] | None = None) -> pd.DataFrame:
    users, items = zip(*pairs, strict=True)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": 4.0,
            "timestamp": timestamps or list(range(len(pairs))),
        }
    )


def test_stratified_by_item_matches_recommenders_draws() -> None:
    # np.random.seed(42); rand(5) = .3745 .9507 .7320 .5987 .1560
    # item a (rows 0-3) sorted by draw: rows 0, 3, 2, 1 -> ranks 1..4; round(0.75 * 4) = 3,
    # so row 1 (rank 4) is test; item b (row 4): rank 1 <= round(0.75 * 1) = 1 -> train
    data = ratings([("u1", "a"), ("u2", "a"), ("u3", "a"), ("u4", "a"), ("u5", "b")])
    train, test = stratified_split(data, 0.75, filter_by="item", seed=42)
    assert sorted(train.index) == [0, 2, 3, 4]
    assert sorted(test.index) == [1]
    assert list(train.columns) == list(data.columns)


def test_stratified_by_user_uses_the_user_groups() -> None:
    data = ratings([("u1", "a"), ("u1", "b"), ("u2", "c"), ("u2", "d")])
    # draws .3745 .9507 | .7320 .5987: each user keeps its lower draw
    train, test = stratified_split(data, 0.5, filter_by="user", seed=42)
    assert sorted(train.index) == [0, 3]
    assert sorted(test.index) == [1, 2]


def test_stratified_min_rating_drops_small_groups() -> None:
    data = ratings([("u1", "a"), ("u2", "a"), ("u3", "b")])
    train, test = stratified_split(data, 0.5, filter_by="item", min_rating=2, seed=1)
    assert set(pd.concat([train, test])["item_id"]) == {"a"}


def test_stratified_rejects_bad_arguments() -> None:
    data = ratings([("u1", "a")])
    with pytest.raises(ValueError, match="filter_by"):
        stratified_split(data, filter_by="both")
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(data, ratio=1.0)
    with pytest.raises(ValueError, match="lack column"):
        stratified_split(data.drop(columns="item_id"))


def test_stratified_partition_and_ratio_on_synthetic_data() -> None:
    rng = np.random.default_rng(0)
    data = ratings([(f"u{rng.integers(50)}", f"i{i // 8}") for i in range(800)])
    train, test = stratified_split(data, 0.75, filter_by="item", seed=42)
    assert len(train) + len(test) == len(data)
    assert not set(train.index) & set(test.index)
    assert (train.groupby("item_id").size() == 6).all()  # 8 per item: 6 / 8 <= 0.75


def test_leave_last_out_takes_each_users_latest() -> None:
    data = ratings(
        [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "z")],
        timestamps=[5, 9, 1, 3, 3, 7],
    )
    train, test = leave_last_out(data)
    assert sorted(zip(test["user_id"], test["item_id"], strict=True)) == [("u1", "b"), ("u2", "b")]
    assert "u3" in set(train["user_id"])  # a single rating stays in training
    assert len(train) == 4


def test_cold_item_split_holds_items_out_entirely() -> None:
    data = ratings([(f"u{i % 7}", f"i{i % 40}") for i in range(400)])
    train, test = cold_item_split(data, 0.1, seed=3)
    assert test["item_id"].nunique() == 4
    assert not set(train["item_id"]) & set(test["item_id"])
    assert len(train) + len(test) == len(data)
    again = cold_item_split(data, 0.1, seed=3)[1]
    assert set(again["item_id"]) == set(test["item_id"])


def test_random_split_partitions_at_the_ratio_and_repeats_per_seed() -> None:
    data = ratings([(f"u{i % 9}", f"i{i}") for i in range(200)])
    train, test = random_split(data, 0.75, seed=1)
    assert (len(train), len(test)) == (150, 50)
    assert sorted([*train.index, *test.index]) == list(range(200))
    assert train.index.equals(random_split(data, 0.75, seed=1)[0].index)
    assert not train.index.equals(random_split(data, 0.75, seed=2)[0].index)
    with pytest.raises(ValueError, match="ratio"):
        random_split(data, 0.0)


def test_temporal_split_cuts_at_one_time_for_everyone() -> None:
    times = [50, 10, 40, 20, 30, 60, 70, 80]
    data = ratings([(f"u{i % 3}", f"i{i}") for i in range(8)], timestamps=times)
    train, test = temporal_split(data, 0.75)
    assert train["timestamp"].max() < test["timestamp"].min()
    assert sorted(test["timestamp"]) == [70, 80]
    tied = ratings([("u1", "a"), ("u2", "b"), ("u3", "c"), ("u4", "d")], timestamps=[1, 2, 2, 3])
    train, test = temporal_split(tied, 0.5)  # the cut's timestamp goes wholly to train
    assert sorted(train["timestamp"]) == [1, 2, 2] and list(test["timestamp"]) == [3]
    with pytest.raises(ValueError, match="too coarse"):
        temporal_split(ratings([("u1", "a"), ("u2", "b")], timestamps=[5, 5]), 0.5)
    with pytest.raises(ValueError, match="lack column"):
        temporal_split(data.drop(columns="timestamp"))


def test_make_split_knows_every_named_split() -> None:
    data = ratings([(f"u{i % 5}", f"i{i % 11}") for i in range(60)])
    for name in SPLITS:
        train, test = make_split(name, data, ratio=0.75, seed=3)
        assert len(train) + len(test) == len(data) and len(test) > 0, name
        assert describe_split(name, ratio=0.75, seed=3)
    assert describe_split("stratified") == "stratified by item 75/25 (seed 42)"
    with pytest.raises(ValueError, match="unknown split 'weekly'"):
        make_split("weekly", data)


def test_equal_timestamps_keep_the_table_order() -> None:
    # u1's three interactions share one timestamp: the rows' order decides, whatever the ids
    data = ratings([("u1", "z"), ("u2", "a"), ("u1", "b"), ("u1", "a")], [5, 1, 5, 5])
    assert chronological(data)["item_id"].tolist() == ["z", "b", "a", "a"]
    assert chronological(chronological(data)).equals(chronological(data))
    train, test = leave_last_out(data)
    assert test[test["user_id"] == "u1"]["item_id"].tolist() == ["a"]
    assert train["item_id"].tolist() == ["z", "b", "a"]  # u2 has one interaction: training


def test_leave_last_out_validation_is_each_users_second_to_last() -> None:
    rng = np.random.default_rng(3)
    users = [f"u{n}" for n in rng.integers(0, 30, size=400)]
    data = ratings([(u, f"i{n}") for n, u in enumerate(users)], rng.integers(0, 50, 400).tolist())
    train, test = make_split("leave-last-out", data)
    fit, validation = validation_split("leave-last-out", train)
    ordered = chronological(data)
    sizes = ordered.groupby("user_id")["user_id"].transform("count")
    position = ordered.groupby("user_id").cumcount()
    second_to_last = ordered[(position == sizes - 2) & (sizes > 2)]
    assert sorted(validation.index) == sorted(second_to_last.index)
    assert not set(validation.index) & set(test.index) and not set(fit.index) & set(test.index)
    assert "second-to-last" in describe_validation("leave-last-out")


def test_temporal_validation_is_the_last_tenth_of_training_time() -> None:
    data = ratings([(f"u{n % 7}", f"i{n}") for n in range(1000)], list(range(1000)))
    train, test = make_split("temporal", data, ratio=0.75)
    fit, validation = validation_split("temporal", train, ratio=0.75)
    assert len(train) == 750 and len(validation) == 75 and len(fit) == 675
    assert fit["timestamp"].max() < validation["timestamp"].min()
    assert validation["timestamp"].max() < test["timestamp"].min()
    assert "last tenth" in describe_validation("temporal")


def test_stratified_and_random_validation_apply_the_split_again() -> None:
    data = ratings([(f"u{n % 9}", f"i{n % 13}") for n in range(300)])
    train, _ = make_split("random", data, seed=1)
    fit, validation = validation_split("random", train, seed=1)
    expect_fit, expect_validation = random_split(train, 0.75, seed=1)
    assert fit.equals(expect_fit) and validation.equals(expect_validation)
