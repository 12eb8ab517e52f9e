"""The filter language: validation, the reference evaluator, and the vectorised evaluator
checked against the reference on random metadata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrec import FilterError, matches
from embedrec.stores.faiss.columns import MetaColumns
from embedrec.stores.filters import And, Cond, Or, fields_of, parse_filter
from tests.stores.conformance import filters, random_metadata


def test_shorthand_and_implicit_and():
    assert parse_filter({"genre": "Comedy"}) == Cond("genre", "$eq", "Comedy")
    assert parse_filter({"a": 1, "b": {"$gte": 2, "$lt": 5}}) == And(
        (Cond("a", "$eq", 1), Cond("b", "$gte", 2), Cond("b", "$lt", 5))
    )
    assert parse_filter({"$or": [{"a": 1}, {"b": True}]}) == Or(
        (Cond("a", "$eq", 1), Cond("b", "$eq", True))
    )
    assert parse_filter({"a": {"$in": np.array(["x", "y"])}}) == Cond("a", "$in", ("x", "y"))
    assert fields_of(parse_filter({"$or": [{"a": 1}, {"$and": [{"b": 2}, {"c": 3}]}]})) == {
        "a",
        "b",
        "c",
    }


@pytest.mark.parametrize(
    "flt, where",
    [
        ({"year": {"$regex": "x"}}, "filter['year']['$regex']: unknown operator"),
        ({"genre": {"$gt": "Drama"}}, "filter['genre']['$gt']: range operator $gt needs a number"),
        ({"$not": {"a": 1}}, "filter['$not']: unknown operator"),
        ({"$and": []}, "filter['$and']: $and needs a non-empty list"),
        ({"$or": [{"a": 1}, {"b": {"$in": []}}]}, "filter['$or'][1]['b']['$in']: $in needs a non"),
        ({"a": {"$in": "abc"}}, "filter['a']['$in']: $in needs a list"),
        ({"a": {"$in": [1, None]}}, "filter['a']['$in'][1]: expected a string"),
        ({"a": {"$exists": 1}}, "filter['a']['$exists']: $exists needs true or false"),
        ({"a": [1, 2]}, "filter['a']: a list is not a value"),
        ({"a": None}, "filter['a']: expected a string"),
        ({"a": {"b": 1}}, "filter['a']['b']: unknown operator"),
        ({"a": {}}, "filter['a']: empty condition"),
        ({"a": float("nan")}, "filter['a']: nan is not a finite number"),
        ("genre = 'x'", "filter: a filter is a dict"),
    ],
)
def test_errors_name_the_node(flt, where):
    with pytest.raises(FilterError) as info:
        parse_filter(flt)
    assert str(info.value).startswith(where), str(info.value)


@pytest.mark.parametrize(
    "meta, flt, expected",
    [
        ({"tags": ["a", "b"]}, {"tags": "a"}, True),
        ({"tags": ["a", "b"]}, {"tags": {"$ne": "a"}}, False),
        ({"tags": ["a", "b"]}, {"tags": {"$nin": ["c"]}}, True),
        ({"tags": []}, {"tags": {"$nin": ["c"]}}, True),
        ({}, {"tags": {"$ne": "a"}}, True),
        ({}, {"tags": {"$eq": "a"}}, False),
        ({"n": 1}, {"n": 1.0}, True),
        ({"n": 1}, {"n": True}, False),
        ({"b": True}, {"b": 1}, False),
        ({"n": "5"}, {"n": {"$gt": 1}}, False),
        ({"n": True}, {"n": {"$gt": 0}}, False),
        ({"n": 5}, {"n": {"$gt": 1, "$lte": 5}}, True),
        ({"n": 5}, {"$or": [{"n": 1}, {"m": {"$exists": False}}]}, True),
        ({"x": 1}, {}, True),
    ],
)
def test_reference_semantics(meta, flt, expected):
    assert matches(meta, flt) is expected
    assert bool(MetaColumns.of_rows([meta]).evaluate(parse_filter(flt))[0]) is expected


def test_dead_rows_match_nothing():
    columns = MetaColumns.of_rows([{"a": 1}, {"a": 2}, {}])
    live = np.array([True, False, True])
    assert columns.evaluate(parse_filter({"a": {"$ne": 2}}), live).tolist() == [True, False, True]
    assert columns.evaluate(parse_filter({}), live).tolist() == [True, False, True]


ROWS = random_metadata(np.random.default_rng(11), 400)
COLUMNS = MetaColumns.of_rows(ROWS)


@settings(max_examples=400, deadline=None)
@given(flt=filters)
def test_vectorised_evaluator_agrees_with_reference(flt):
    expected = [matches(row, flt) for row in ROWS]
    assert COLUMNS.evaluate(parse_filter(flt)).tolist() == expected


@given(value=st.one_of(st.text(max_size=5), st.integers(-(2**53), 2**53), st.booleans()))
def test_eq_on_any_scalar(value):
    rows = [{"f": value}, {"f": [value] if isinstance(value, str) else value}, {}]
    assert MetaColumns.of_rows(rows).evaluate(parse_filter({"f": value})).tolist() == [
        matches(r, {"f": value}) for r in rows
    ]


@given(value=st.one_of(st.integers(2**53 + 1), st.integers(max_value=-(2**53) - 1)))
def test_integers_beyond_2_53_are_refused(value):
    """float64 (Pinecone, the FAISS columns) cannot tell 2**53 from 2**53 + 1."""
    for flt in ({"f": value}, {"f": {"$in": [1, value]}}, {"f": {"$gte": value}}):
        with pytest.raises(FilterError, match=r"2\*\*53"):
            parse_filter(flt)


def nested(depth: int, op: str = "$and") -> dict:
    flt: dict = {"f": 1}
    for _ in range(depth):
        flt = {op: [flt]}
    return flt


@pytest.mark.parametrize("depth", [17, 200, 3000])
@pytest.mark.parametrize("op", ["$and", "$or"])
def test_depth_limit(depth, op):
    assert parse_filter(nested(16, op)) is not None
    with pytest.raises(FilterError, match="at most 16 levels"):
        parse_filter(nested(depth, op))


def test_size_limits():
    parse_filter({"$or": [{"f": i} for i in range(1000)]})
    with pytest.raises(FilterError, match="at most 1000 conditions"):
        parse_filter({"$or": [{"f": i} for i in range(1001)]})
    with pytest.raises(FilterError, match="at most 1000 conditions"):
        parse_filter({f"f{i}": {"$gt": 0, "$lt": 5} for i in range(501)})
    parse_filter({"f": {"$in": list(range(10_000))}})
    with pytest.raises(FilterError, match="at most 10000 values"):
        parse_filter({"f": {"$nin": list(range(10_001))}})


@pytest.mark.parametrize(
    "flt",
    [
        {"f": "caf\udce9"},
        {"caf\udce9": 1},
        {"f": {"$in": ["ok", "\ud800"]}},
        {"$and": [{"f": {"$ne": "\udfff"}}]},
    ],
)
def test_unwritable_text_is_refused(flt):
    with pytest.raises(FilterError, match="not valid Unicode") as info:
        parse_filter(flt)
    str(info.value).encode("utf-8")


def test_errors_on_deep_values_do_not_recurse():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for flt in ({"f": {"$eq": deep}}, {"f": {"$in": deep}}, {"$and": deep}, deep):
        with pytest.raises(FilterError):
            parse_filter(flt)
