"""The one L2 normalisation that embedders and stores share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

ZeroRows = Literal["keep", "refuse"]


class ZeroVectorError(ValueError):
    """A zero row where a direction is needed (stores raise it as their `VectorError`)."""


def l2_normalize(
    vectors: np.ndarray, *, zero_rows: ZeroRows, ids: Sequence[str] | None = None
) -> np.ndarray:
    """Rows of a 2-d array scaled to unit length, as float32.

    A zero row has no direction. An embedder may legitimately produce one (a blank image)
    and keeps it as zero (`zero_rows="keep"`); a cosine store must not hold one, so it asks
    for `zero_rows="refuse"`, which raises `ZeroVectorError` naming the record (from `ids`) or
    the query row.
    """
    if zero_rows not in ("keep", "refuse"):
        raise ValueError(f"zero_rows must be 'keep' or 'refuse', not {zero_rows!r}")
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))  # half np.linalg.norm's work
    if norms.all():
        return out / norms[:, None]
    if zero_rows == "refuse":
        row = int(np.flatnonzero(norms == 0)[0])
        name = f"record {ids[row]!r}" if ids is not None else f"query {row}"
        raise ZeroVectorError(f"{name}: zero vector has no direction under the cosine metric")
    return out / np.where(norms == 0, np.float32(1), norms)[:, None]
