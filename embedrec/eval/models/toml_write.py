"""Write a config back as TOML (Python reads TOML but ships no writer).

Covers what a config dump holds: strings, booleans, numbers, lists of those, tables and
lists of tables. TOML has no null, so None values must be left out before writing.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"{where}: cannot write {type(value).__name__} {value!r} as TOML")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(path: list[str], table: dict[str, Any], out: list[str]) -> None:
    name = ".".join(_key(p) for p in path)
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_tables(v)}
    if path and (plain or not table):
        out.append(f"\n[{name}]")
    out.extend(f"{_key(k)} = {_value(v, f'{name}.{k}')}" for k, v in plain.items())
    for key, value in table.items():
        if isinstance(value, dict):
            _table([*path, key], value, out)
        elif _is_tables(value):
            for item in value:
                out.append(f"\n[[{'.'.join(_key(p) for p in [*path, key])}]]")
                out.extend(f"{_key(k)} = {_value(v, f'{name}.{key}.{k}')}" for k, v in item.items())


def dumps(data: dict[str, Any]) -> str:
    """`data` as a TOML document: top-level values first, then each table."""
    out: list[str] = []
    _table([], data, out)
    return "\n".join(out).lstrip("\n") + "\n"
