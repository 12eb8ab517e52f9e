"""The whole-batch checks agree with the per-record ones: what they pass, the per-record
checks pass unchanged; what they refuse (None), the per-record checks convert or refuse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedrec import open_store
from embedrec.stores.base import check_metadata, normalize_ids
from embedrec.stores.batch_checks import (
    IdKeys,
    checked_ids,
    plain_columns,
    plain_ids,
)
from embedrec.stores.errors import (
    DimensionError,
    IdError,
    MetadataError,
    StoreError,
    VectorError,
)
from embedrec.stores.text import ListColumn, utf8_packed

GOOD = [
    {"genre": "Comedy", "year": 1999, "score": 7.5, "new": False},
    None,
    {},
    {"t": "é", "tags": ["a", "é"], "none": []},
]


def plain_metadata(rows):
    """The rows `plain_columns` passes, read back as rows (None where it refuses)."""
    checked = plain_columns(rows)
    return None if checked is None else list(checked)


def test_a_plain_batch_passes_as_the_per_record_checks_pass_it():
    ids, (data, offsets) = plain_ids(["a", "b", "é"])
    assert ids == normalize_ids(["a", "b", "é"])
    assert bytes(data) == "abé".encode() and offsets.tolist() == [0, 1, 2, 4]
    assert plain_metadata(GOOD) == [check_metadata("x", m) for m in GOOD]


def test_columns_pass_as_the_rows_they_hold():
    """Metadata given as columns (None where a record has none; numpy arrays of numbers or
    booleans) reads back as the rows it holds, in Python's types."""
    columns = {
        "genre": ["Comedy", None, None, "é"],
        "year": np.array([1999, 2000, 2001, 2002]),
        "score": np.array([7.5, 1.0, 2.0, 3.0], dtype=np.float32),
        "new": np.array([False, True, True, False]),
        "tags": [None, None, ["a", "é"], []],
    }
    checked = plain_columns(columns)
    assert checked is not None and len(checked) == 4
    rows = list(checked)
    assert rows[0] == {"genre": "Comedy", "year": 1999, "score": 7.5, "new": False}
    assert rows[2] == {"year": 2001, "score": 2.0, "new": True, "tags": ["a", "é"]}
    assert checked[3] == rows[3] and type(checked[3]["year"]) is int
    assert rows == [check_metadata("x", m) for m in rows]


@pytest.mark.parametrize(
    "ids",
    [[], ["a", ""], ["a", 1], ["a", np.int64(2)], ["\udce9"], ("a", True)],
    ids=["empty", "blank", "int", "numpy int", "surrogate", "bool"],
)
def test_ids_that_are_not_plain_go_to_the_per_record_check(ids):
    assert plain_ids(ids) is None


def test_an_id_twice_is_found_by_its_key(monkeypatch):
    """Repeated ids are found among sorted keys, also where every id shares one key."""
    ids = [f"r{n}" for n in range(50)]
    assert not IdKeys.of(ids).repeats(ids)
    assert IdKeys.of([*ids, "r7"]).repeats([*ids, "r7"])
    with pytest.raises(IdError, match="'r7' appears twice in one batch"):
        checked_ids([*ids, "r7"])

    def alike(cls, ids):  # every key equal: each candidate is confirmed by its id
        return cls(np.zeros(len(ids), np.int64), np.arange(len(ids)))

    monkeypatch.setattr(IdKeys, "of", classmethod(alike))
    assert not IdKeys.of(ids).repeats(ids)
    assert IdKeys.of([*ids, "r7"]).repeats([*ids, "r7"])
    assert checked_ids(ids)[0] == ids


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


def test_finite_floats_whose_sum_overflows_pass():
    """Floats are checked one by one (in numpy), never refused for what their sum does."""
    for batch in ([{"x": 1e308}, {"x": 1e308}], [{"x": 1e308}, {"x": 1e308}, {"x": 1}]):
        assert plain_metadata(batch) == batch == [check_metadata("r", m) for m in batch]


@pytest.mark.parametrize(
    "column",
    [
        np.array([1.0, np.nan]),
        np.array([1, 2**53 + 1]),
        np.array([1, 2**63 + 1], dtype=np.uint64),
        ["a", None, np.int64(3)],
        [np.str_("a"), np.str_("b")],
        ["a", np.str_("b")],
        ["a", "\udce9"],
        np.array(["a", "b"], dtype=object),
    ],
)
def test_columns_that_are_not_plain_go_to_the_per_record_check(column):
    checked = plain_columns({"x": column})
    if isinstance(column, np.ndarray) and column.dtype == object:  # str items: plain
        assert list(checked) == [{"x": "a"}, {"x": "b"}]
    else:
        assert checked is None


def test_a_store_still_names_the_bad_record(tmp_path):
    store = open_store("faiss:", dim=2, metric="l2")
    with pytest.raises(MetadataError, match=r"record 'b'.*finite"):
        store.upsert(["a", "b"], np.ones((2, 2)), [{"x": 1.0}, {"x": float("nan")}])
    with pytest.raises(IdError, match="twice"):
        store.upsert(["a", "a"], np.ones((2, 2)))
    assert store.count() == 0
    with pytest.raises(MetadataError, match=r"record 'b', key 'x'.*finite"):
        store.upsert(["a", "b"], np.ones((2, 2)), {"x": np.array([1.0, np.inf])})
    with pytest.raises(MetadataError, match=r"field 'x' has 1 values for 2 ids"):
        store.upsert(["a", "b"], np.ones((2, 2)), {"x": [1]})
    with pytest.raises(MetadataError, match=r"field 'x': a column is a list of values, not str"):
        store.upsert(["a", "b"], np.ones((2, 2)), {"x": "ab"})
    assert store.count() == 0
    store.upsert(["a", "b"], np.ones((2, 2)), [{"x": np.float32(1.5)}, None])
    assert [r.metadata for r in store.fetch(["a", "b"])] == [{"x": 1.5}, {}]
    store.upsert(["b", "c"], np.ones((2, 2)), {"x": np.array([3, 4]), "t": ["u", None]})
    store.upsert(["d", "e"], np.ones((2, 2)), {})  # no columns: no metadata
    store.upsert(["f"], np.ones((1, 2)), {"x": [True]})
    got = [r.metadata for r in store.fetch(["a", "b", "c", "d", "e", "f"])]
    assert got == [{"x": 1.5}, {"x": 3, "t": "u"}, {"x": 4}, {}, {}, {"x": True}]


def test_a_column_of_strings_passes_only_as_exact_str():
    """A column of str alone is found by counting types: numpy's str_ (a subclass) is the
    per-record checks' to convert, in rows as in columns."""
    rows = [{"t": np.str_("a")}, {"t": np.str_("b")}]
    assert plain_columns(rows) is None
    checked = plain_columns([{"t": "a"}, {"t": "b"}])
    assert list(checked) == [{"t": "a"}, {"t": "b"}]
    assert all(type(v) is str for v in checked.columns["t"].values)


def test_a_column_of_lists_is_held_flat_and_read_as_lists():
    """Lists alone in a column are held as their items and lengths (`ListColumn`), read
    back as the lists they were, by index from either end, by slice and in a store."""
    rows = [{"t": []}, {"t": ["a", "b"]}, {"t": ["c"]}]
    checked = plain_columns(rows)
    lists = checked.columns["t"].values
    assert isinstance(lists, ListColumn) and lists.items == ["a", "b", "c"]
    assert list(checked) == rows and checked[-1] == rows[-1] and checked[0:2] == rows[:2]
    assert lists[-2] == ["a", "b"] and lists[1:] == [["a", "b"], ["c"]]
    with pytest.raises(IndexError):
        lists[3]
    store = open_store("faiss:", dim=2)
    store.upsert(["x", "y", "z"], np.ones((3, 2)), rows)
    assert [r.metadata for r in store.fetch(["x", "y", "z"])] == rows
    assert {h.id for h in store.search(np.ones(2), 3, filter={"t": "b"})[0]} == {"y"}


def test_lists_that_pass_are_the_stores_own():
    tags = ["a"]
    checked = plain_columns([{"tags": tags}])
    tags.append("b")
    assert list(checked) == [{"tags": ["a"]}]
    checked = plain_columns({"tags": [tags]})
    tags.append("c")
    assert list(checked) == [{"tags": ["a", "b"]}]


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


def test_bad_values_in_columns_are_refused_by_record():
    store = open_store("faiss:", dim=2)
    columns = {"n": np.array([1.0, np.nan, 2.0]), "g": ["x", "y", None]}
    batch, refused = store.check_records(["a", "b", "c"], np.ones((3, 2)), columns)
    assert batch.ids == ["a", "c"] and [pos for pos, _ in refused] == [1]
    assert "record 'b', key 'n'" in str(refused[0][1])
    store.upsert_checked(batch)
    assert [r.metadata for r in store.fetch(["a", "c"])] == [{"n": 1.0, "g": "x"}, {"n": 2.0}]


@pytest.mark.parametrize(
    "strings", [["a", "bc", "日本"], ["x\x00y", "", "ü"], ["\x00"], ["", ""], []]
)
def test_strings_are_packed_as_utf8_with_offsets(strings):
    """One join with NUL between the strings packs them; a string holding NUL itself is
    measured apart."""
    data, offsets = utf8_packed(strings)
    assert offsets.dtype == np.int64 and len(offsets) == len(strings) + 1
    assert bytes(data) == "".join(strings).encode()
    assert [bytes(data[a:b]).decode() for a, b in itertools.pairwise(offsets)] == strings


@pytest.mark.parametrize("strings", [["a", None], ["a", b"b"], ["a", 1], ["\udce9"]])
def test_only_text_utf8_writes_is_packed(strings):
    assert utf8_packed(strings) is None
