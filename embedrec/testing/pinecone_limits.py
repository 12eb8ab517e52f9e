"""Pinecone's documented request limits, as the loopback server enforces them.

Each check raises `LimitViolation` for a request Pinecone would refuse with 400, so a test
session can assert that the store never broke one.
"""

from __future__ import annotations

from typing import Any

import orjson

from embedrec.stores.errors import FilterError
from embedrec.stores.filters import is_number, parse_filter

MAX_UPSERT_VECTORS = 1_000
MAX_UPSERT_BYTES = 2_000_000
""""2 MB": the stricter reading (not 2 MiB)."""
MAX_METADATA_BYTES = 40 * 1024
MAX_TOP_K = 10_000
MAX_TOP_K_WITH_DATA = 1_000
MAX_IDS = 1_000
MAX_ID_CHARS = 512
MAX_FETCH_BY_METADATA = 10_000
MAX_LIST_LIMIT = 100
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
METRICS = ("cosine", "dotproduct", "euclidean")
DEFAULT_NAMESPACE = "__default__"


class LimitViolation(Exception):
    """A request Pinecone would refuse with 400."""


def check_id(vid: Any, where: str) -> str:
    if not isinstance(vid, str) or not vid:
        raise LimitViolation(f"{where}: id must be a non-empty string, got {vid!r}")
    if len(vid) > MAX_ID_CHARS:
        raise LimitViolation(f"{where}: id longer than {MAX_ID_CHARS} characters")
    if not vid.isascii() or "\x00" in vid:
        raise LimitViolation(f"{where}: id must be ASCII without NUL, got {vid!r}")
    return vid


def check_namespace(ns: Any) -> str:
    if ns is None:
        ns = ""
    if not isinstance(ns, str) or len(ns) > 512 or not ns.isascii() or "\x00" in ns:
        raise LimitViolation(f"bad namespace {ns!r}")
    return DEFAULT_NAMESPACE if ns == "" else ns


def check_metadata(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise LimitViolation(f"{where}: metadata must be an object")
    size = len(orjson.dumps(meta))
    if size > MAX_METADATA_BYTES:
        raise LimitViolation(f"{where}: metadata is {size} bytes, over {MAX_METADATA_BYTES}")
    for key, value in meta.items():
        if value is None:
            raise LimitViolation(f"{where}: metadata key {key!r} is null")
        if isinstance(value, (str, bool)) or is_number(value):
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            continue
        raise LimitViolation(f"{where}: metadata key {key!r} has unsupported value {value!r}")
    return meta


def _check_operand(op: str, value: Any, where: str) -> None:
    if op in ("$eq", "$ne"):
        ok = isinstance(value, (str, bool)) or is_number(value)
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        ok = is_number(value)
    elif op in ("$in", "$nin"):
        ok = (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(v, str) or is_number(v) for v in value)
        )
    else:  # $exists
        ok = isinstance(value, bool)
    if not ok:
        raise LimitViolation(f"{where}: operand {value!r} is not valid for {op}")


def _check_filter(flt: Any, where: str = "filter") -> None:
    """Pinecone's filter grammar: operators, operand types, $and/$or lists."""
    if not isinstance(flt, dict) or not flt:
        raise LimitViolation(f"{where}: a filter is a non-empty object")
    for key, value in flt.items():
        here = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise LimitViolation(f"{here}: needs a non-empty list")
            for i, sub in enumerate(value):
                _check_filter(sub, f"{here}[{i}]")
        elif key.startswith("$"):
            raise LimitViolation(f"{here}: unknown operator")
        elif isinstance(value, dict):
            if not value:
                raise LimitViolation(f"{here}: empty condition")
            for op, operand in value.items():
                if op not in FILTER_OPERATORS:
                    raise LimitViolation(f"{here}: unknown operator {op!r}")
                _check_operand(op, operand, f"{here}.{op}")
        else:
            _check_operand("$eq", value, here)


def parse_request_filter(flt: Any) -> Any:
    if flt is None:
        return None
    _check_filter(flt)
    try:
        return parse_filter(flt)
    except FilterError as exc:
        raise LimitViolation(str(exc)) from None
