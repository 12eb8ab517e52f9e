"""Vectors as callers pass them (arrays, lists, one vector or many) made into the float32
matrix every store takes, or refused with a `VectorError` / `DimensionError` / `IdError` that
names the record: the wrong type, the wrong shape, values no store can score, a count that
differs from the ids'."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedrec.stores.errors import DimensionError, IdError, VectorError

_FLOAT32 = np.dtype(np.float32)


def as_matrix(vectors: Any, dim: int, ids: Sequence[str] | None = None) -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy-free view where possible, with every row finite.

    `ids` name the records in error messages; without them rows are named by position.
    """
    if type(vectors) is np.ndarray and vectors.dtype is _FLOAT32 and vectors.flags.c_contiguous:
        # Already what stores take (every single query of a loop comes here, right after the
        # previous search has evicted the interpreter's caches): as it is, after a few C
        # calls; anything else goes through the full checks below, and their errors.
        rows = vectors[None] if vectors.ndim == 1 else vectors  # one vector: a row view
        if (
            rows.ndim == 2
            and rows.shape[1] == dim
            and (ids is None or len(ids) == len(rows))
            and math.isfinite(np.vdot(rows, rows))  # not ndarray.dot: it warns on overflow
        ):
            return rows
    arr = _numbers(vectors, ids)
    if arr.ndim >= 1 and arr.shape[0] == 0:
        arr = arr.reshape(0, dim)  # no vectors: for no ids, or for an IdError below
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"vectors must be (n, {dim}) or ({dim},), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionError(f"vectors have dimension {arr.shape[1]}, the store has {dim}")
    if ids is not None and len(ids) != arr.shape[0]:
        raise IdError(f"{len(ids)} ids for {arr.shape[0]} vectors")
    arr = np.ascontiguousarray(arr)
    # One dot product is finite exactly when every value is and no squared norm overflows,
    # unless the sum over many rows overflows: only then the row by row checks.
    if not math.isfinite(np.vdot(arr, arr)):
        _refuse_unscorable(arr, ids)
    return arr


def _numbers(vectors: Any, ids: Sequence[str] | None) -> np.ndarray:
    """`vectors` as a float32 array, provided they are numbers (int or float: not strings,
    bools or None) in rows of one length; else `VectorError` or `DimensionError` naming the
    first bad record (or row)."""
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError):  # ragged rows, or rows numpy cannot hold together
        arr = None
    if arr is not None and arr.dtype.kind in "iuf" and not _holds_bools(vectors, arr):
        return arr.astype(np.float32, copy=False)
    rows: Any = ()
    if arr is None or (arr.ndim == 1 and isinstance(vectors[0], (Sequence, np.ndarray))):
        rows = vectors  # rows of different lengths or types
    elif arr.ndim == 1:
        rows = [vectors]  # one vector, of strings, bools or None
    elif arr.ndim == 2:
        rows = vectors if isinstance(vectors, Sequence) else arr
    width = None
    for n, row in enumerate(rows):
        name = f"record {ids[n]!r}" if ids is not None and n < len(ids) else f"query {n}"
        try:
            values = np.asarray(row)
        except (ValueError, TypeError):
            values = np.asarray(None)
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise VectorError(f"{name}: a vector is a list of numbers, not {reprlib.repr(row)}")
        if width is not None and len(values) != width:
            raise DimensionError(f"{name}: vector has dimension {len(values)}, not {width}")
        width = len(values)
    raise VectorError(f"vectors must be numbers, (n, dim) or (dim,), not {reprlib.repr(vectors)}")


def _holds_bools(vectors: Any, arr: np.ndarray) -> bool:
    """True when lists of numbers hold a bool, which numpy reads as 1.0 or 0.0 beside
    numbers (an array of bools alone has its own dtype). A lone number is no vector: the
    shape check refuses it."""
    if isinstance(vectors, np.ndarray) or arr.ndim == 0:
        return False
    rows = vectors if arr.ndim == 2 else [vectors]
    return any(type(x) is bool for row in rows for x in row)


def _refuse_unscorable(arr: np.ndarray, ids: Sequence[str] | None) -> None:
    """Raise for the first row with NaN or inf, or whose squared norm overflows float32
    (every store scores in float32: such a row would score inf, or normalise to zeros)."""
    finite = np.isfinite(arr).all(axis=1)
    with np.errstate(over="ignore"):
        overflows = ~np.isfinite(np.einsum("ij,ij->i", arr, arr))
    bad = ~finite | overflows
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    name = f"record {ids[row]!r}" if ids is not None else f"query {row}"
    if not finite[row]:
        raise VectorError(f"{name}: vector contains NaN or inf")
    raise VectorError(
        f"{name}: vector's squared norm overflows float32 (values up to "
        f"{float(np.abs(arr[row]).max()):.3g}); scale it down"
    )
