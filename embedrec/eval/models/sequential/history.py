"""Each user's training history as a sequence of catalogue items, oldest first."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedrec.eval.models.baselines import Catalog
from embedrec.ranking.splits import TIMESTAMP, chronological


def ordered_train(catalog: Catalog, model: str) -> pd.DataFrame:
    """The catalogue's training interactions in `chronological` order; a model that reads
    sequences cannot run without timestamps."""
    if TIMESTAMP not in catalog.train.columns:
        raise ValueError(
            f"the {model!r} model reads each user's history in time order and needs a "
            "timestamp column: name it in [data.interactions] timestamp"
        )
    return chronological(catalog.train)


def histories(catalog: Catalog, model: str) -> list[np.ndarray]:
    """Per user row of the catalogue: the indices of the candidate items they interacted
    with in training, oldest first (items outside the catalogue left out)."""
    train = ordered_train(catalog, model)
    train = train[
        train["user_id"].isin(catalog.user_index.index)
        & train["item_id"].isin(catalog.item_index.index)
    ]
    rows = catalog.user_index.loc[train["user_id"]].to_numpy()
    items = catalog.item_index.loc[train["item_id"]].to_numpy()
    # a stable sort by user row keeps each user's time order
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(len(catalog.users) + 1))
    items = items[order]
    return [items[bounds[u] : bounds[u + 1]] for u in range(len(catalog.users))]
