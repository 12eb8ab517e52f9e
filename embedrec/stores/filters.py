"""The engine-neutral filter language.

A filter is a dict, as in Pinecone and MongoDB::

    {"genre": {"$in": ["Comedy"]}, "year": {"$gte": 1990}}

`{"f": v}` means `{"f": {"$eq": v}}`; several keys in one dict are ANDed; `$and` / `$or`
take non-empty lists of filters at any depth. Operators: `$eq $ne $gt $gte $lt $lte $in
$nin $exists`.

Semantics, the same on every store (`matches` is the reference):

- values compare within their type: strings with strings, booleans with booleans, numbers
  (int and float alike) with numbers; a value of another type never equals;
- on a list field, `$eq` / `$in` hold when any element matches; `$ne` / `$nin` are their
  exact negation: no element matches, or the field is absent;
- ranges hold only on numeric fields; a range with a non-numeric bound is a `FilterError`;
- `$exists: true` holds when the key is present.

`parse_filter` validates a dict into a small tree (`Cond`, `And`, `Or`) that every backend
translates; errors name the offending node by its path, e.g. `filter["year"]["$gte"]`.

Limits, each a `FilterError` beyond it, so that no filter can exhaust the stack or a backend's
request size: `$and`/`$or` nest at most `MAX_DEPTH` (16) levels; a filter holds at most
`MAX_CONDITIONS` (1,000) conditions; an `$in`/`$nin` list holds at most `MAX_SET_VALUES`
(10,000, Pinecone's limit) values; integers lie within +-2**53 (what every store compares
exactly); strings are text that UTF-8 can write (no lone surrogates).
`stores/faiss/columns.py` evaluates the same tree vectorised over a FAISS store's metadata
columns.
"""

from __future__ import annotations

import operator
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrec.stores.errors import FilterError
from embedrec.stores.text import encodable

Scalar = str | int | float | bool
EQUALITY_OPS = ("$eq", "$ne")
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
COMPARE = dict(zip(RANGE_OPS, (operator.gt, operator.ge, operator.lt, operator.le), strict=True))
"""Each range operator as the comparison it makes, of one value or of a numpy column."""
SET_OPS = ("$in", "$nin")
OPERATORS = (*EQUALITY_OPS, *RANGE_OPS, *SET_OPS, "$exists")
MAX_DEPTH = 16
MAX_CONDITIONS = 1_000
MAX_SET_VALUES = 10_000
MAX_INT = 2**53


@dataclass(frozen=True, slots=True)
class Cond:
    """One condition on one field. `value` is a scalar, a tuple of scalars ($in/$nin), a
    number (ranges) or a bool ($exists)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node = Cond | And | Or


def is_number(v: object) -> bool:
    """An int or float that is not a bool (bools are ints to Python, not to filters)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(value: str, path: str) -> str:
    if not encodable(value):
        raise FilterError(f"{path}: {value!a} is not valid Unicode text")
    return value


def _scalar(value: object, path: str) -> Scalar:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise FilterError(f"{path}: {value} is outside +-2**53, which stores compare exactly")
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise FilterError(f"{path}: {value} is not a finite number")
        return value
    raise FilterError(
        f"{path}: expected a string, number or boolean, got {type(value).__name__} "
        f"{reprlib.repr(value)}"
    )


@dataclass
class _Budget:
    """What a filter may still hold while it is parsed."""

    conditions: int = MAX_CONDITIONS

    def spend(self, path: str) -> None:
        self.conditions -= 1
        if self.conditions < 0:
            raise FilterError(f"{path}: a filter holds at most {MAX_CONDITIONS} conditions")


def _parse_op(field: str, op: str, value: object, path: str) -> Cond:
    if op in EQUALITY_OPS:
        return Cond(field, op, _scalar(value, path))
    if op in RANGE_OPS:
        value = value.item() if isinstance(value, np.generic) else value
        if not is_number(value):
            raise FilterError(
                f"{path}: range operator {op} needs a number, got {type(value).__name__} "
                f"{value!r} (ranges on strings are not supported)"
            )
        return Cond(field, op, _scalar(value, path))
    if op in SET_OPS:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(
            value, (Sequence, np.ndarray, set, frozenset)
        ):
            raise FilterError(f"{path}: {op} needs a list of values, got {reprlib.repr(value)}")
        if len(value) > MAX_SET_VALUES:
            raise FilterError(f"{path}: {op} takes at most {MAX_SET_VALUES} values")
        values = tuple(_scalar(v, f"{path}[{i}]") for i, v in enumerate(value))
        if not values:
            raise FilterError(f"{path}: {op} needs a non-empty list")
        return Cond(field, op, values)
    if op == "$exists":
        if not isinstance(value, bool):
            raise FilterError(f"{path}: $exists needs true or false, got {reprlib.repr(value)}")
        return Cond(field, op, value)
    raise FilterError(f"{path}: unknown operator {op!a}; known: {' '.join(OPERATORS)}")


def _parse(obj: object, path: str, depth: int, budget: _Budget) -> Node:
    if not isinstance(obj, Mapping):
        raise FilterError(
            f"{path}: a filter is a dict, got {type(obj).__name__} {reprlib.repr(obj)}"
        )
    if depth > MAX_DEPTH:
        raise FilterError(f"{path}: $and/$or nest at most {MAX_DEPTH} levels deep")
    items: list[Node] = []
    for key, value in obj.items():
        here = f"{path}[{key!a}]" if isinstance(key, str) else f"{path}[{reprlib.repr(key)}]"
        if not isinstance(key, str) or not key:
            raise FilterError(f"{here}: keys are field names or $and/$or")
        _text(key, here)
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise FilterError(f"{here}: {key} needs a non-empty list of filters")
            subs = tuple(_parse(v, f"{here}[{i}]", depth + 1, budget) for i, v in enumerate(value))
            items.append(And(subs) if key == "$and" else Or(subs))
        elif key.startswith("$"):
            raise FilterError(
                f"{here}: unknown operator {key!r} at field level; "
                "use $and/$or here, or put the operator under a field"
            )
        elif isinstance(value, Mapping):
            if not value:
                raise FilterError(f"{here}: empty condition")
            for op, operand in value.items():
                budget.spend(here)
                items.append(_parse_op(key, op, operand, f"{here}[{op!a}]"))
        elif isinstance(value, (list, tuple, set, np.ndarray)):
            raise FilterError(f"{here}: a list is not a value to compare with; use $in")
        else:
            budget.spend(here)
            items.append(Cond(key, "$eq", _scalar(value, here)))
    return items[0] if len(items) == 1 else And(tuple(items))  # And(()) matches all


def parse_filter(filter: Mapping | Node) -> Node:
    """Validate a filter dict into a tree. `{}` is the filter that matches everything."""
    if isinstance(filter, (Cond, And, Or)):
        return filter
    return _parse(filter, "filter", 0, _Budget())


# -- the reference evaluator -----------------------------------------------------------------


def _same(a: object, b: Scalar) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(b):
        return is_number(a) and a == b
    return isinstance(a, str) and a == b


def _eq(value: object, target: Scalar) -> bool:
    if isinstance(value, list):
        return any(_same(v, target) for v in value)
    return _same(value, target)


def _cond(metadata: Mapping[str, Any], c: Cond) -> bool:
    present = c.field in metadata
    if c.op == "$exists":
        return present == c.value
    value = metadata.get(c.field)
    if c.op == "$eq":
        return present and _eq(value, c.value)
    if c.op == "$ne":
        return not (present and _eq(value, c.value))
    if c.op == "$in":
        return present and any(_eq(value, t) for t in c.value)
    if c.op == "$nin":
        return not (present and any(_eq(value, t) for t in c.value))
    return present and is_number(value) and COMPARE[c.op](value, c.value)


def _eval(metadata: Mapping[str, Any], node: Node) -> bool:
    if isinstance(node, Cond):
        return _cond(metadata, node)
    if isinstance(node, And):
        return all(_eval(metadata, n) for n in node.items)
    return any(_eval(metadata, n) for n in node.items)


def matches(metadata: Mapping[str, Any] | None, filter: Mapping | Node) -> bool:
    """The reference evaluator: does one record's metadata satisfy the filter?"""
    return _eval(metadata or {}, parse_filter(filter))


def fields_of(node: Node) -> set[str]:
    """Every field a filter reads (stores use it to index those fields)."""
    if isinstance(node, Cond):
        return {node.field}
    return set().union(*(fields_of(n) for n in node.items))


def check_fields(node: Node, known: frozenset[str] | None, where: str) -> Node:
    """`node`, or a `FilterError` for a field that no record of the store `where` has, where
    it knows its fields (`known`): a misspelt field would otherwise match nothing (or, under
    `$ne`, everything) without a word."""
    unknown = sorted(fields_of(node) - known) if known is not None else []
    if unknown:
        raise FilterError(
            f"filter field {unknown[0]!r} is not a field of {where}; "
            f"its fields: {', '.join(sorted(known or ()))}"
        )
    return node
