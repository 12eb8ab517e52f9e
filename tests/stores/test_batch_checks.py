"""The whole-batch checks agree with the per-record ones: what they pass, the per-record
checks pass unchanged; what they refuse (None), the per-record checks convert or refuse."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec import open_store
from embedrec.stores.base import check_metadata, normalize_ids
from embedrec.stores.batch_checks import plain_ids, plain_metadata
from embedrec.stores.errors import (
    DimensionError,
    IdError,
    MetadataError,
    StoreError,
    VectorError,
)

GOOD = [
    {"genre": "Comedy", "year": 1999, "score": 7.5, "new": False},
    None,
    {},
    {"t": "é", "tags": ["a", "é"], "none": []},
]


def test_a_plain_batch_passes_as_the_per_record_checks_pass_it():
    assert plain_ids(["a", "b", "é"]) == normalize_ids(["a", "b", "é"])
    assert plain_metadata(GOOD) == [check_metadata("x", m) for m in GOOD]


@pytest.mark.parametrize(
    "ids",
    [[], ["a", "a"], ["a", ""], ["a", 1], ["a", np.int64(2)], ["\udce9"], ("a", True)],
    ids=["empty", "twice", "blank", "int", "numpy int", "surrogate", "bool"],
)
def test_ids_that_are_not_plain_go_to_the_per_record_check(ids):
    assert plain_ids(ids) is None


@pytest.mark.parametrize(
    "entry",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": 2**53 + 1},
        {"x": -(2**53) - 1},
        {"x": None},
        {"x": ["a", 1]},
        {"x": ["a", None]},
        {"x": ("a",)},
        {"x": ["\udce9"]},
        {"x": [["a"]]},
        {"x": np.int64(3)},
        {"x": {"y": 1}},
        {"$x": 1},
        {"": 1},
        {1: 1},
        {"x": "\udce9"},
        {"\udce9": 1},
        ["not", "a", "dict"],
    ],
)
def test_metadata_that_is_not_plain_goes_to_the_per_record_check(entry):
    assert plain_metadata([{"ok": 1}, entry]) is None


def test_sums_that_overflow_are_checked_one_by_one():
    """Finite floats whose sum overflows leave the fast path; each is still accepted."""
    batch = [{"x": 1e308}, {"x": 1e308}]
    assert plain_metadata(batch) is None
    assert [check_metadata("r", m) for m in batch] == batch


def test_a_store_still_names_the_bad_record(tmp_path):
    store = open_store("faiss:", dim=2, metric="l2")
    with pytest.raises(MetadataError, match=r"record 'b'.*finite"):
        store.upsert(["a", "b"], np.ones((2, 2)), [{"x": 1.0}, {"x": float("nan")}])
    with pytest.raises(IdError, match="twice"):
        store.upsert(["a", "a"], np.ones((2, 2)))
    assert store.count() == 0
    store.upsert(["a", "b"], np.ones((2, 2)), [{"x": np.float32(1.5)}, None])
    assert [r.metadata for r in store.fetch(["a", "b"])] == [{"x": 1.5}, {}]


def test_lists_that_pass_are_the_stores_own():
    tags = ["a"]
    (checked,) = plain_metadata([{"tags": tags}])
    tags.append("b")
    assert checked == {"tags": ["a"]}


def test_a_checked_batch_is_written_without_checking_again():
    store = open_store("faiss:", dim=2)
    batch = store.check_batch(["a", "b"], [[3.0, 4.0], [1.0, 0.0]], [{"g": ["x"]}, None])
    assert batch.ids == ["a", "b"] and batch.unit
    assert np.allclose(batch.vectors[0], [0.6, 0.8])
    assert store.upsert_checked(batch) == 2
    assert [r.metadata for r in store.fetch(["a", "b"])] == [{"g": ["x"]}, {}]
    other = open_store("faiss:", dim=3)
    with pytest.raises(DimensionError):
        other.upsert_checked(batch)
    with pytest.raises(StoreError, match="CheckedBatch"):
        store.upsert_checked((["a"], np.ones((1, 2)), [{}]))  # type: ignore[arg-type]


def test_a_bad_record_in_a_checked_batch_is_refused_by_name():
    """check_records keeps the good records and names each bad one; check_batch refuses the
    whole batch, naming the record, field and reason, as upsert does."""
    store = open_store("faiss:", dim=2)
    ids = ["a", "b", "c", "a", "d"]
    vectors = np.array([[1, 0], [0, 1], [0, 0], [1, 1], [1, 1]], dtype=np.float32)
    metadata = [{"g": ["x"]}, {"g": ["x", 3]}, None, None, {"n": float("nan")}]
    with pytest.raises(IdError, match="'a' appears twice"):
        store.check_batch(ids, vectors, metadata)
    with pytest.raises(MetadataError, match=r"record 'b', key 'g'.*only strings"):
        store.check_batch(ids[:2], vectors[:2], metadata[:2])
    batch, refused = store.check_records(ids, vectors, metadata)
    assert batch.ids == ["a"] and len(batch.metadata) == len(batch.vectors) == 1
    assert [pos for pos, _ in refused] == [1, 2, 3, 4]
    reasons = [str(exc) for _, exc in refused]
    assert "record 'b', key 'g'" in reasons[0] and isinstance(refused[0][1], MetadataError)
    assert "'c'" in reasons[1] and isinstance(refused[1][1], VectorError)  # zero under cosine
    assert "'a' appears twice" in reasons[2] and isinstance(refused[2][1], IdError)
    assert "record 'd', key 'n'" in reasons[3] and "finite" in reasons[3]
    store.upsert_checked(batch)
    assert store.count() == 1


def test_a_batch_wrong_as_a_whole_is_raised():
    store = open_store("faiss:", dim=2)
    with pytest.raises(IdError, match="2 ids for 1 vectors"):
        store.check_records(["a", "b"], np.ones((1, 2)))
    with pytest.raises(MetadataError, match="1 metadata entries for 2 ids"):
        store.check_records(["a", "b"], np.ones((2, 2)), [{}])
    batch, refused = store.check_records([], np.empty((0, 2)))
    assert (len(batch), refused) == (0, [])
