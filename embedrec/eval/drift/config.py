"""The `[drift]` TOML section of `embedrec drift`: the sample, and the thresholds a candidate
must meet before a pipeline swaps it in (see configs/drift.toml).

Each threshold is optional; one that is set and missed makes `drift` exit 1 and names it. A
threshold on a figure the comparison did not measure (overlap of two item stores, which have
no users) is reported as not checked rather than passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from embedrec.common.config import from_config_folder, load_model


class DriftSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(10, ge=1)
    """The cut-off of the top-k lists compared."""
    users: int = Field(1000, ge=1)
    """Users sampled (seeded) for the recommendation lists."""
    items: int = Field(1000, ge=1)
    """Items sampled (seeded) for norms and nearest-neighbour sets."""
    seed: int = 42
    """Seed of the sampled users and items."""
    data: Path | None = None
    """Two models: the `embedrec train` config whose [data] gives the users and items."""
    min_overlap: float | None = Field(None, ge=0, le=1)
    """Mean overlap@k of the two models' recommendation lists at least this."""
    min_rank_correlation: float | None = Field(None, ge=-1, le=1)
    """Mean Kendall tau-b over the union of the two lists at least this."""
    min_neighbour_jaccard: float | None = Field(None, ge=0, le=1)
    """Mean Jaccard@k of each sampled item's nearest neighbours at least this."""
    max_gini_increase: float | None = Field(None, ge=0)
    """Gini of the new model's recommendation counts minus the old one's at most this."""
    max_coverage_drop: float | None = Field(None, ge=0, le=1)
    """Catalog coverage of the old model minus the new one's at most this."""
    max_norm_shift: float | None = Field(None, ge=0)
    """|mean new norm - mean old norm| / mean old norm of the sampled items at most this."""

    @field_validator("data")
    @classmethod
    def _from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, "drift.data")


class DriftFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    drift: DriftSection = DriftSection()


def load_drift_config(path: str | Path | None) -> DriftSection:
    """The [drift] section of `path`, or the defaults (no thresholds) without a file."""
    return DriftSection() if path is None else load_model(path, DriftFile).drift


CHECKS: tuple[tuple[str, str, str], ...] = (
    # threshold key, figure key (drift.json), direction
    ("min_overlap", "overlap_mean", "min"),
    ("min_rank_correlation", "rank_correlation_mean", "min"),
    ("min_neighbour_jaccard", "neighbour_jaccard_mean", "min"),
    ("max_gini_increase", "gini_increase", "max"),
    ("max_coverage_drop", "coverage_drop", "max"),
    ("max_norm_shift", "norm_shift", "max"),
)


def check(figures: dict[str, Any], config: DriftSection) -> list[dict[str, Any]]:
    """One entry per threshold that is set: its value, the figure, and `passed` (True,
    False, or None where the figure was not measured)."""
    out = []
    for key, figure, direction in CHECKS:
        limit = getattr(config, key)
        if limit is None:
            continue
        value = figures.get(figure)
        if value is None:
            passed = None
        else:
            passed = bool(value >= limit) if direction == "min" else bool(value <= limit)
        out.append({"threshold": key, "limit": limit, "figure": figure, "value": value,
                    "passed": passed})  # fmt: skip
    return out
