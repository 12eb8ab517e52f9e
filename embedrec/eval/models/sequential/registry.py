"""The next-item models' entries for the harness: `[eval] models` keys -> factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embedrec.eval.models.baselines import Model
from embedrec.eval.models.sequential.cornac_models import CLASSES, CornacSequential
from embedrec.eval.models.sequential.session import RecentPopularity, Transitions

Factory = Callable[[Any, Any, bool], Model]


def _cornac(key: str) -> Factory:
    def build(config: Any, text_fn: Any, progress: bool) -> Model:
        return CornacSequential(key, getattr(config.baselines, key))

    return build


CORNAC: dict[str, Factory] = {f"cornac-{key}": _cornac(key) for key in CLASSES}
"""Cornac's next-item models, the slowest first."""

SESSION: dict[str, Factory] = {
    "transitions": lambda config, text_fn, progress: Transitions(config.baselines.transitions),
    "recent-popularity": lambda config, text_fn, progress: RecentPopularity(
        config.baselines.recent_popularity
    ),
}
"""The two session baselines written here (fast)."""
