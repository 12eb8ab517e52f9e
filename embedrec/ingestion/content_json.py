"""A record's metadata as the JSON text its content hash takes (manifest.py):
`json.dumps(metadata, sort_keys=True, ensure_ascii=False)`, the text of earlier versions, so
that existing manifests stay valid.

`metadata_json` makes it for one record. `column_jsons` makes it for a chunk of records from
their metadata columns (rows.py's `build_many`): each value's JSON once per column (a list
cell's once per distinct cell), then each record's text a join of its parts, about a third
of the cost of encoding each record's dict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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
    key)."""
    if not columns:
        return ["{}"] * n
    names = sorted(columns)
    parts = [_fragments(f"{_STRING(name)}: ", columns[name]) for name in names]
    parts[0] = ["{" + part for part in parts[0]]
    parts[-1] = [part + "}" for part in parts[-1]]
    if len(parts) == 1:
        return parts[0]
    return list(map(", ".join, zip(*parts, strict=True)))


def _fragments(key: str, values: Sequence[Any]) -> list[str]:
    """`key` followed by each value's JSON."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        return [key + text for text in map(_STRING, values)]
    if kinds <= {int}:
        return [key + text for text in map(int.__repr__, values)]
    known: dict[tuple[str, ...], str] = {}  # list cells repeat (a catalog's genre sets)
    out: list[str] = []
    for value in values:
        if type(value) is not list:
            out.append(key + metadata_json(value))  # type: ignore[arg-type]
            continue
        text = known.get(items := tuple(value))
        if text is None:
            text = known[items] = key + metadata_json(value)  # type: ignore[arg-type]
        out.append(text)
    return out
