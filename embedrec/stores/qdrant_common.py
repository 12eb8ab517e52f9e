"""What both Qdrant backends share: record <-> point mapping and filter translation.

`qdrant.py` (qdrant-client: server and local mode) and `qdrant_edge.py` (qdrant-edge-py)
build the same payloads and the same filters from different model classes; a `Dialect`
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

import numpy as np

from embedrec.stores.base import Hits
from embedrec.stores.errors import ConfigError, MetadataError
from embedrec.stores.filters import And, Cond, Node, Or

ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
ID_KEY = "$id"
EMPTY_KEY = "$empty"
BOOL_KEY = "$bool"
ENCODED_PREFIX = "$k"
UNSPELLABLE = ('"', "\\")
INT_RANGE = (-(2**63), 2**64 - 1)


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
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise MetadataError(
                    f"record {record_id!r}, key {key!r}: {value} does not fit Qdrant's 64-bit "
                    "integers; store it as a float or a string"
                )
        elif isinstance(value, bool) and shadow_bools:
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


def l2_score(distance: float) -> float:
    """Qdrant's Euclid score is the distance; ours is the negated squared distance."""
    return -(float(distance) ** 2)


class LeavesOutInSearch:
    """For the Qdrant stores, whose `_search_excluding` leaves ids out within the query
    itself: a plain search is one that leaves nothing out."""

    def _search(
        self, queries: np.ndarray, k: int, node: Node | None, params: dict[str, Any]
    ) -> list[Hits]:
        return self._search_excluding(queries, k, node, params, [()] * len(queries))  # type: ignore[attr-defined]


def hits_from(points: Iterable[Any], l2: bool) -> Hits:
    """One query's scored points, from either library (`.payload`, `.score`), as hits."""
    ids, scores, metadata = [], [], []
    for p in points:
        rid, meta = from_payload(p.payload)
        ids.append(rid)
        scores.append(l2_score(p.score) if l2 else float(p.score))
        metadata.append(meta)
    return Hits(ids, scores, metadata)


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


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _any_of(d: Dialect, conditions: list[Any]) -> Any:
    return conditions[0] if len(conditions) == 1 else d.Filter(should=conditions)


def _equals_any(d: Dialect, field: str, targets: Iterable[Any]) -> Any:
    """Holds when the value, or any element of a list value, equals one of the targets
    within its type (strings with strings, numbers with numbers, booleans with booleans)."""
    path = json_path(payload_key(field))
    strings = sorted({t for t in targets if isinstance(t, str)})
    numbers = sorted({float(t) for t in targets if _is_number(t)})
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


def value_schema(field: str, value: Any, dialect: Dialect) -> tuple[str, str]:
    """The payload index (payload key, schema) that serves equality and ranges on a field
    holding `value`: `keyword` for strings and lists, `float` for numbers (Qdrant's float
    index holds ints too), `bool` for booleans (or `$bool` where the dialect shadows them)."""
    if isinstance(value, bool):
        if not dialect.matches_bools:
            return BOOL_KEY, "keyword"
        return payload_key(field), "bool"
    kind = "float" if _is_number(value) else "keyword"
    return payload_key(field), kind


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
                path, schema = value_schema(n.field, v, dialect)
                out.setdefault(path, schema)

    walk(node)
    return out


def search_options(params: Mapping[str, Any], default_ef: int | None) -> tuple[int | None, bool]:
    """Validated (ef, exact) from per-call search params."""
    ef = params.get("ef", default_ef)
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 1):
        raise ConfigError(f"search param ef must be a positive integer, got {ef!r}")
    exact = params.get("exact", False)
    if not isinstance(exact, bool):
        raise ConfigError(f"search param exact must be true or false, got {exact!r}")
    return ef, exact
