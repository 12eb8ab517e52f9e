"""One cell of a catalog -> the text to embed or a metadata value of its column's type;
a record's metadata values -> the JSON text its content hash takes.

Each problem raises `InvalidValue` naming the column, which the row builder turns into a
reject of that row alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from embedrec.ingestion.columns import MetaField
from embedrec.stores.base import MAX_INT, MetadataValue
from embedrec.stores.text import encodable

_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
_BOOLS = frozenset(_TRUE + _FALSE)


class InvalidValue(Exception):
    """A cell that cannot be used: `field` names its column, `reason` says why."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_utf8(name: str, value: Any) -> None:
    if type(value) is str and value.isascii():  # most cells: no further test
        return
    if isinstance(value, str) and not encodable(value):
        raise InvalidValue(name, "holds bytes that are not valid UTF-8")
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue(name, "holds bytes that are not valid UTF-8") from None


def as_text(name: str, value: Any) -> str:
    """A cell as it reads in the text template (absent and null read as empty)."""
    check_utf8(name, value)
    if type(value) is str:  # every CSV cell: skip the tests below
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list, tuple)) for v in value):
            raise InvalidValue(name, "a nested list or object cannot go into the text")
        return ", ".join(str(v) for v in value if v is not None)
    if isinstance(value, dict):
        raise InvalidValue(name, "a nested object cannot go into the text")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def convert(f: MetaField, value: Any, list_sep: str) -> MetadataValue:
    """One metadata value of `f.type`; strings are parsed, other values must already fit."""
    name, kind = f.name, f.type
    if type(value) is str:  # every CSV cell: the text kinds without the tests below
        check_utf8(name, value)
        if kind in ("auto", "str"):
            return value
        if kind == "list":
            return split_list(value, list_sep)
        if kind == "int":
            try:
                return _exact(name, value, int(value))
            except ValueError:
                pass  # "3.0", "1e3", or not a number: the tests below tell which
    if isinstance(value, bytes):
        check_utf8(name, value)
        value = value.decode("utf-8")
    check_utf8(name, value)
    if isinstance(value, dict):
        raise InvalidValue(name, "nested objects are not allowed in metadata")
    if isinstance(value, (list, tuple)):
        return _as_list(name, kind, value)
    text = value.strip() if isinstance(value, str) else None
    if kind == "auto":
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue(name, f"{value} is not a finite number")
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidValue(name, f"unsupported type {type(value).__name__} {value!r}")
        return _exact(name, value, value) if type(value) is int else value
    if kind == "str":
        if text is None:
            raise InvalidValue(name, f"expected str, got {type(value).__name__} {value!r}")
        return value
    if kind == "list":
        if text is None:
            raise InvalidValue(
                name, f"expected a list of str, got {type(value).__name__} {value!r}"
            )
        return split_list(text, list_sep)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise InvalidValue(name, f"expected bool, got {value!r}")
    return _as_number(name, kind, value, text)


def split_list(text: str, list_sep: str) -> list[str]:
    """A list cell's items: split on the separator, stripped, the empty ones left out."""
    return [part for part in map(str.strip, text.split(list_sep)) if part]


def plain_cell(kind: str, list_sep: str) -> Callable[[str], MetadataValue | None]:
    """What `convert` makes of a non-blank string cell (written as UTF-8) of a `kind`
    column, as one call per cell; None where `convert` would raise or needs more than the
    plain case (an int column's "3.0")."""
    if kind in ("auto", "str"):
        return lambda cell: cell
    if kind == "list":
        return lambda cell: split_list(cell, list_sep)
    if kind == "bool":
        return lambda cell: (
            (cell.strip().lower() in _TRUE) if cell.strip().lower() in _BOOLS else None
        )
    return _plain_int if kind == "int" else _plain_float


def plain_column(kind: str, list_sep: str) -> Callable[[Sequence[str]], list[Any]]:
    """`plain_cell` of each cell of a column of non-blank strings, in passes that run in C
    where every cell converts (`map(int, cells)`), cell by cell only where one does not."""
    if kind in ("auto", "str"):
        return list
    if kind == "list":
        return partial(_list_column, list_sep)
    if kind == "int":
        return _int_column
    if kind == "float":
        return _float_column
    return partial(_each, plain_cell(kind, list_sep))


def _each(convert_one: Callable[[str], Any], cells: Sequence[str]) -> list[Any]:
    return list(map(convert_one, cells))


def _int_column(cells: Sequence[str]) -> list[int | None]:
    try:
        out = list(map(int, cells))
    except ValueError:
        return _each(_plain_int, cells)
    if out and (min(out) < -MAX_INT or max(out) > MAX_INT):
        return _each(_plain_int, cells)
    return out


def _float_column(cells: Sequence[str]) -> list[float | None]:
    try:
        out = list(map(float, cells))  # float() strips whitespace as str.strip() does
    except ValueError:
        return _each(_plain_float, cells)
    return out if all(map(math.isfinite, out)) else _each(_plain_float, cells)


def _list_column(list_sep: str, cells: Sequence[str]) -> list[list[str]]:
    """`split_list` of each cell, split once per distinct cell: a catalog's list cells repeat
    (a few hundred genre sets among a million items), and splitting costs a few times a
    look-up. Each cell gets a list of its own."""
    known = {cell: split_list(cell, list_sep) for cell in set(cells)}
    return list(map(list.copy, map(known.__getitem__, cells)))


def _plain_int(cell: str) -> int | None:
    try:
        number = int(cell)
    except ValueError:
        return None
    return number if -MAX_INT <= number <= MAX_INT else None


def _plain_float(cell: str) -> float | None:
    try:
        number = float(cell.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _as_list(name: str, kind: str, value: list[Any] | tuple[Any, ...]) -> list[str]:
    if kind not in ("auto", "list"):
        raise InvalidValue(name, f"expected {kind}, got a list")
    bad = next((v for v in value if not isinstance(v, str)), None)
    if bad is not None or any(v is None for v in value):
        raise InvalidValue(name, f"lists may hold only strings, found {type(bad).__name__} {bad!r}")
    for v in value:
        check_utf8(name, v)
    return list(value)


def _as_number(name: str, kind: str, value: Any, text: str | None) -> int | float:
    """An int or float column's value; an integral float (`3.0`, `1e3`) fits an int column."""
    if isinstance(value, bool):
        raise InvalidValue(name, f"expected {kind}, got bool {value!r}")
    try:
        number = float(text) if text is not None else float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidValue(name, f"expected {kind}, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidValue(name, f"{value!r} is not a finite number")
    if kind == "float":
        return number
    if not number.is_integer():
        raise InvalidValue(name, f"expected int, got {value!r}")
    if text is not None:
        try:
            return _exact(name, value, int(text))
        except ValueError:
            return _exact(name, value, int(number))
    return _exact(name, value, int(value))


def _exact(name: str, value: Any, number: int) -> int:
    """`number` (read from `value`) if every store keeps it exact, as `VectorStore.upsert`
    requires: refused here, it rejects its row rather than the whole batch it would be in."""
    if not -MAX_INT <= number <= MAX_INT:
        raise InvalidValue(name, f"{value!r} is outside +-2**53, the integers stores keep exactly")
    return number


# -- metadata as JSON text ------------------------------------------------------------------
# A record's metadata as the JSON text its content hash takes (manifest.py):
# `json.dumps(metadata, sort_keys=True, ensure_ascii=False)`, the text of earlier versions, so
# that existing manifests stay valid.
#
# `metadata_json` makes it for one record. `column_jsons` makes it for a chunk of records from
# their metadata columns (rows.py's `build_many`): each value's JSON once per column (a list
# cell's once per distinct cell), then each record's text a join of its parts, about a third
# of the cost of encoding each record's dict.

_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_ONE_SHOT = (
    json.encoder.c_make_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ": ", ", ", True,
        False, True,
    )
    if json.encoder.c_make_encoder is not None
    else None
)  # fmt: skip
"""CPython's C encoder of `_ENCODER`, which `JSONEncoder.encode` builds anew for each call,
built once (with no circular check: metadata holds only scalars and lists of str)."""
_STRING = json.encoder.encode_basestring
"""The string encoder `json.dumps(..., ensure_ascii=False)` uses."""


def metadata_json(metadata: dict[str, Any]) -> str:
    """`json.dumps(metadata, sort_keys=True, ensure_ascii=False)`, at about half its cost."""
    if _ONE_SHOT is None:
        return _ENCODER.encode(metadata)
    return "".join(_ONE_SHOT(metadata, 0))


def column_jsons(columns: dict[str, Sequence[Any]], n: int) -> list[str]:
    """`[metadata_json(record) ...]` for the n records whose metadata is `columns` (name ->
    a value per record, each a str, int, float, bool or list of str; every record has every
    key): each column's values as JSON in one pass, then each record's text filled into a
    template of the keys (`str.format`, an int as its `str`, which is its JSON)."""
    if not columns:
        return ["{}"] * n
    names = sorted(columns)
    keys = (_STRING(name).replace("{", "{{").replace("}", "}}") for name in names)
    template = "{{" + ", ".join(f"{key}: {{}}" for key in keys) + "}}"
    return list(map(template.format, *(_values_json(columns[name]) for name in names)))


def _values_json(values: Sequence[Any]) -> Sequence[Any]:
    """Each value's JSON, in a pass that runs in C for a column of one kind (a list
    column's JSON once per distinct list: a catalog's genre sets repeat); an int column as
    it is (`str.format` writes an int as its JSON)."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        return list(map(_STRING, values))
    if kinds <= {int}:
        return values
    if kinds <= {list}:
        items = list(map(tuple, values))
        known = {one: metadata_json(one) for one in set(items)}  # type: ignore[arg-type]
        return list(map(known.__getitem__, items))
    return list(map(metadata_json, values))
