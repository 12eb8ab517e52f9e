"""The checks of `VectorStore.upsert` for a whole batch at once, in passes that run in C:
the common batch (str ids; dicts of str, int, float and bool values) passes at a small
share of the per-record checks' cost (`normalize_ids`, `check_metadata`: a Python call per
value, most of an upsert's time). Anything else, and anything wrong, gets None, and the
per-record checks then convert it or name the record, field and reason."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from embedrec.stores.results import MetadataValue
from embedrec.stores.text import encodable

MAX_INT = 2**53  # as base.MAX_INT, which imports this module
PLAIN_VALUES = frozenset({str, int, float, bool})
NO_METADATA = frozenset({dict, type(None)})


def plain_ids(ids: Any) -> list[str] | None:
    """`ids` as a list when every one is a non-empty str, none twice and all of them text
    that UTF-8 can write; None otherwise (also for an empty batch)."""
    if not isinstance(ids, (list, tuple)) or set(map(type, ids)) != {str}:
        return None
    unique = set(ids)
    if len(unique) != len(ids) or "" in unique or not encodable("".join(ids)):
        return None
    return list(ids)


def plain_metadata(
    metadata: Sequence[Any],
) -> list[dict[str, MetadataValue]] | None:
    """The batch's metadata (None as {}) when every entry is a dict or None whose keys are
    plain non-empty strings not starting with '$' and whose values are str (writable as
    UTF-8), int within +-2**53, finite float or bool; None otherwise. The dicts are the
    caller's own: stores copy what they keep."""
    if not set(map(type, metadata)) <= NO_METADATA:
        return None
    dicts = [m for m in metadata if m]
    keys = set(itertools.chain.from_iterable(dicts))
    if set(map(type, keys)) - {str} or not encodable("".join(keys)):
        return None
    if any(not k or k[0] == "$" for k in keys):
        return None
    values = list(itertools.chain.from_iterable(map(dict.values, dicts)))
    kinds = set(map(type, values))
    if kinds - PLAIN_VALUES:
        return None
    if str in kinds and not encodable("".join(_of_type(values, str))):
        return None
    if int in kinds:
        ints = _of_type(values, int)
        if min(ints) < -MAX_INT or max(ints) > MAX_INT:
            return None
    if float in kinds and not math.isfinite(sum(_of_type(values, float))):
        return None  # NaN or inf, or finite values whose sum overflows: checked one by one
    return [m if m is not None else {} for m in metadata]


def _of_type(values: list[Any], kind: type) -> list[Any]:
    """The values of exactly `kind`, picked out without a Python call per value."""
    return list(itertools.compress(values, map(operator.is_, map(type, values), repeat(kind))))
