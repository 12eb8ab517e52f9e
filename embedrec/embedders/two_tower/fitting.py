"""Training a two-tower model with the trainer its config's user encoder needs: the static
tower's (`training.STATIC`) or the sequence tower's (`sequence_training.SEQUENCE`). Kept apart
from both so that neither training module imports the other's."""

from __future__ import annotations

import pandas as pd

from embedrec.embedders.two_tower.features import TextFn, Towers
from embedrec.embedders.two_tower.model import TwoTowerConfig, TwoTowerModel
from embedrec.embedders.two_tower.sequence_training import SEQUENCE
from embedrec.embedders.two_tower.training import STATIC, fit


def fit_two_tower(
    ratings: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    config: TwoTowerConfig | None = None,
    *,
    towers: Towers | None = None,
    text_fn: TextFn | None = None,
    progress: bool = True,
) -> TwoTowerModel:
    """Train on (user_id, item_id) interactions (see `training.fit`)."""
    config = config or TwoTowerConfig()
    trainer = SEQUENCE if config.sequence else STATIC
    return fit(
        ratings, users, items, config, trainer=trainer, towers=towers, text_fn=text_fn,
        progress=progress,
    )  # fmt: skip
