"""Records as Qdrant points and filters as Qdrant filters, for both engines.

The qdrant-client models and qdrant-edge-py's classes spell the same filters; a `Dialect`
names the classes of one library, and `translate` builds a filter from them.

Points. Qdrant ids must be unsigned integers or UUIDs, so an id becomes a deterministic
UUIDv5 and the original id travels in the payload. Reserved payload keys start with `$`,
which user metadata keys may not (base.check_metadata), so they never clash:

- `$id`: the original id;
- `$empty`: the keys whose value is an empty list (Qdrant's `is_empty` also holds for `[]`,
  our `$exists` does not: a key holding `[]` is present);
- `$bool`: `"1key"` / `"0key"` per boolean value, for dialects that cannot match booleans
  (qdrant-edge-py 0.9 turns `MatchValue(True)` into the integer 1);
- `$k<hex>`: a user key that Qdrant's JSON paths cannot spell (one holding `"` or `\\`).

Filters. Our semantics (filters.py) differ from Qdrant's in ways the translation handles:
numbers compare across int and float (Qdrant's exact match does not: numeric equality is a
range `gte=lte=v`, which never holds for booleans or strings); `$ne`/`$nin` mean "no element
matches, or absent", which is `must_not` around the positive match (Qdrant's `except` holds
when ANY element is outside the list, so it is not used).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from embedrec.stores.filters import And, Cond, Node, Or, is_number

ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
ID_KEY = "$id"
EMPTY_KEY = "$empty"
BOOL_KEY = "$bool"
ENCODED_PREFIX = "$k"
UNSPELLABLE = ('"', "\\")
KIND_SCHEMA = {"str": "keyword", "list": "keyword", "int": "float", "float": "float"}
"""The payload index serving each declared kind (Qdrant's float index holds ints too, and
numeric equality is a range); "bool" depends on the dialect (`field_schema`)."""


@dataclass(frozen=True)
class Dialect:
    """The filter model classes of one Qdrant library, called with keyword arguments."""

    Filter: Callable[..., Any]
    FieldCondition: Callable[..., Any]
    MatchValue: Callable[..., Any]
    MatchAny: Callable[..., Any]
    Range: Callable[..., Any]
    is_empty: Callable[[str], Any]
    """A condition that holds when a key is absent, null or `[]`."""
    has_id: Callable[[set[str]], Any]
    """A condition that holds for the points with these point ids."""
    matches_bools: bool = True
    """False where `MatchValue(True)` does not match booleans; `$bool` is used instead."""


# -- points --------------------------------------------------------------------------------


def point_id(record_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, record_id))


def payload_key(key: str) -> str:
    if any(ch in key for ch in UNSPELLABLE):
        return ENCODED_PREFIX + key.encode().hex()
    return key


def json_path(payload_key: str) -> str:
    """Quoted, so that dots, brackets and `$` in a key are not read as path syntax."""
    return f'"{payload_key}"'


def indexed_keys(payload_schema: Iterable[str]) -> set[str]:
    """Payload keys from the index paths Qdrant reports (it quotes only where needed)."""
    return {p[1:-1] if len(p) > 1 and p[0] == p[-1] == '"' else p for p in payload_schema}


def to_payload(record_id: str, metadata: Mapping[str, Any], shadow_bools: bool) -> dict:
    payload: dict[str, Any] = {ID_KEY: record_id}
    empty: list[str] = []
    bools: list[str] = []
    for key, value in metadata.items():
        if isinstance(value, bool) and shadow_bools:
            bools.append(f"{int(value)}{key}")
        elif isinstance(value, list) and not value:
            empty.append(key)
        payload[payload_key(key)] = value
    if empty:
        payload[EMPTY_KEY] = empty
    if bools:
        payload[BOOL_KEY] = bools
    return payload


def from_payload(payload: Mapping[str, Any] | None) -> tuple[str, dict]:
    """The original id and the user metadata of a stored payload."""
    payload = payload or {}
    metadata = {k: v for k, v in payload.items() if k[0] != "$"}
    if len(metadata) + 1 < len(payload):  # reserved keys besides $id: decode spelled-out keys
        for key, value in payload.items():
            if key.startswith(ENCODED_PREFIX):
                metadata[bytes.fromhex(key[len(ENCODED_PREFIX) :]).decode()] = value
    return str(payload.get(ID_KEY, "")), metadata


# -- filters -------------------------------------------------------------------------------


def _any_of(d: Dialect, conditions: list[Any]) -> Any:
    return conditions[0] if len(conditions) == 1 else d.Filter(should=conditions)


def _equals_any(d: Dialect, field: str, targets: Iterable[Any]) -> Any:
    """Holds when the value, or any element of a list value, equals one of the targets
    within its type (strings with strings, numbers with numbers, booleans with booleans)."""
    path = json_path(payload_key(field))
    strings = sorted({t for t in targets if isinstance(t, str)})
    numbers = sorted({float(t) for t in targets if is_number(t)})
    bools = sorted({t for t in targets if isinstance(t, bool)})
    conditions = []
    if strings:
        match = d.MatchValue(value=strings[0]) if len(strings) == 1 else d.MatchAny(any=strings)
        conditions.append(d.FieldCondition(key=path, match=match))
    conditions += [d.FieldCondition(key=path, range=d.Range(gte=n, lte=n)) for n in numbers]
    for b in bools:
        if d.matches_bools:
            conditions.append(d.FieldCondition(key=path, match=d.MatchValue(value=b)))
        else:
            shadow = d.MatchValue(value=f"{int(b)}{field}")
            conditions.append(d.FieldCondition(key=json_path(BOOL_KEY), match=shadow))
    return _any_of(d, conditions)


def _exists(d: Dialect, field: str) -> Any:
    present = d.Filter(must_not=[d.is_empty(json_path(payload_key(field)))])
    empty_list = d.FieldCondition(key=json_path(EMPTY_KEY), match=d.MatchValue(value=field))
    return d.Filter(should=[present, empty_list])


_RANGE_ARG = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def _cond(d: Dialect, c: Cond) -> Any:
    if c.op in ("$eq", "$in"):
        return _equals_any(d, c.field, c.value if c.op == "$in" else (c.value,))
    if c.op in ("$ne", "$nin"):
        targets = c.value if c.op == "$nin" else (c.value,)
        return d.Filter(must_not=[_equals_any(d, c.field, targets)])
    if c.op == "$exists":
        exists = _exists(d, c.field)
        return exists if c.value else d.Filter(must_not=[exists])
    bound = d.Range(**{_RANGE_ARG[c.op]: float(c.value)})
    return d.FieldCondition(key=json_path(payload_key(c.field)), range=bound)


def _node(d: Dialect, node: Node) -> Any:
    if isinstance(node, Cond):
        return _cond(d, node)
    items = [_node(d, n) for n in node.items]
    if isinstance(node, And):
        return d.Filter(must=items)
    assert isinstance(node, Or)
    return d.Filter(should=items)


def translate(node: Node | None, dialect: Dialect) -> Any:
    """A Qdrant filter equivalent to `node` under filters.matches; None for no filter."""
    if node is None:
        return None
    out = _node(dialect, node)
    return out if isinstance(out, dialect.Filter) else dialect.Filter(must=[out])


def leave_out(qfilter: Any, ids: Collection[str], dialect: Dialect) -> Any:
    """`qfilter` (None: every point) without the records `ids`, which Qdrant then leaves out
    of the search itself."""
    if not ids:
        return qfilter
    return dialect.Filter(
        must=[qfilter] if qfilter is not None else None,
        must_not=[dialect.has_id({point_id(i) for i in ids})],
    )


# -- payload indexes -----------------------------------------------------------------------


def field_schema(field: str, kind: str, dialect: Dialect) -> tuple[str, str]:
    """The payload index (payload key, schema) that serves equality and ranges on a field of
    a declared kind: `keyword` for strings and lists, `float` for numbers, `bool` for
    booleans (or a keyword index on `$bool` where the dialect shadows them)."""
    if kind == "bool":
        return (payload_key(field), "bool") if dialect.matches_bools else (BOOL_KEY, "keyword")
    return payload_key(field), KIND_SCHEMA[kind]


def value_kind(value: Any) -> str:
    """The declared kind a metadata value belongs to."""
    if isinstance(value, bool):
        return "bool"
    if is_number(value):
        return "float"
    return "list" if isinstance(value, list) else "str"


def index_schema(node: Node, dialect: Dialect) -> dict[str, str]:
    """The payload indexes a filter would use, as {payload key: schema}. A field compared
    with several types gets the first; `$exists` alone wants none."""
    out: dict[str, str] = {}

    def walk(n: Node) -> None:
        if isinstance(n, (And, Or)):
            for item in n.items:
                walk(item)
        elif n.op != "$exists":
            for v in n.value if isinstance(n.value, tuple) else (n.value,):
                path, schema = field_schema(n.field, value_kind(v), dialect)
                out.setdefault(path, schema)

    walk(node)
    return out
