"""`as_matrix` takes a float32 array that is already what stores take (contiguous, (n, dim) or
(dim,), finite) as it is, after a few C calls; every other array goes through the full checks,
with the same result or the same error as the same values passed as lists."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec.stores.errors import StoreError
from embedrec.stores.vector_input import as_matrix

DIM = 4


def _outcome(vectors: object, ids: list[str] | None = None) -> tuple[str, object]:
    try:
        return "ok", as_matrix(vectors, DIM, ids).tolist()
    except StoreError as exc:
        return type(exc).__name__, str(exc)


def test_ready_arrays_are_taken_as_they_are():
    one = np.arange(DIM, dtype=np.float32)
    many = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    assert as_matrix(one, DIM).shape == (1, DIM)
    assert np.shares_memory(as_matrix(one, DIM), one)
    assert np.shares_memory(as_matrix(many, DIM, ["a", "b", "c"]), many)


ROW = [1.0, 2.0, 3.0, 4.0]
CASES = {
    "nan": [1.0, np.nan, 3.0, 4.0],
    "inf": [1.0, 2.0, -np.inf, 4.0],
    "norm overflows": [3e38, 0.0, 0.0, 0.0],
    "rows": [ROW, ROW],
    "rows, one nan": [ROW, [np.nan, 0.0, 0.0, 0.0]],
    "rows whose sum overflows": [[7e18] * DIM] * 3,  # each row's squared norm is finite
    "short": ROW[:3],
    "long rows": [[*ROW, 5.0]] * 2,
    "no rows": np.zeros((0, DIM)).tolist(),
    "scalar": 1.0,
    "3-d": [[ROW]],
}


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_float32_arrays_meet_the_checks_of_lists(values):
    array = np.asarray(values, dtype=np.float32)
    listed = array.tolist()
    assert _outcome(array) == _outcome(listed)
    n = 1 if array.ndim < 2 else len(array)
    assert _outcome(array, ["x"] * n) == _outcome(listed, ["x"] * n)
    assert _outcome(array, ["x"] * (n + 1)) == _outcome(listed, ["x"] * (n + 1))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 2 * DIM, dtype=np.float32).reshape(2, 2 * DIM)[:, ::2],  # strided
        np.arange(2 * DIM, dtype=">f4").reshape(2, DIM),  # big-endian
        np.asfortranarray(np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)),
    ],
    ids=["strided", "big-endian", "fortran"],
)
def test_other_float32_layouts_become_contiguous_copies(array):
    out = as_matrix(array, DIM)
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert out.tolist() == array.tolist()
