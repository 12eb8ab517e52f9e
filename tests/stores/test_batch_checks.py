"""The whole-batch checks agree with the per-record ones: what they pass, the per-record
checks pass unchanged; what they refuse (None), the per-record checks convert or refuse."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec import open_store
from embedrec.stores.base import check_metadata, normalize_ids
from embedrec.stores.batch_checks import plain_ids, plain_metadata
from embedrec.stores.errors import IdError, MetadataError

GOOD = [{"genre": "Comedy", "year": 1999, "score": 7.5, "new": False}, None, {}, {"t": "é"}]


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
        {"x": ["a"]},
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
