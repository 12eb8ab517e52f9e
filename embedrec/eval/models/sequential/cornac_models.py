"""Cornac's next-item recommenders in the harness: SASRec, BERT4Rec, GRU4Rec, FPMC, SPop.

Each user's training interactions, in `ranking.splits.chronological` order, are one Cornac
session (Cornac's sequential models take the row order as the sequence). A user is scored
with their whole training history as the session so far (the transformers read its last
`max_len` items), over the catalogue; users Cornac never saw score 0 everywhere and items it
never saw are not ranked, as for the other Cornac rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from embedrec.embedders.two_tower.training import deterministic
from embedrec.eval.models.baselines import Catalog, Model
from embedrec.eval.models.field_models import _gather, require_extra
from embedrec.eval.models.sequential.gru4rec_scores import gru4rec_scores
from embedrec.eval.models.sequential.history import ordered_train

CLASSES = {
    "sasrec": "SASRec",
    "bert4rec": "BERT4Rec",
    "gru4rec": "GRU4Rec",
    "fpmc": "FPMC",
    "spop": "SPop",
}
"""Model key (as in `[eval] models`, without the "cornac-" prefix) -> Cornac class."""


def sequential_dataset(cornac: Any, catalog: Catalog, model: str, seed: int) -> Any:
    """The training interactions as a Cornac SequentialDataset, one session per user."""
    train = ordered_train(catalog, model)
    users = train["user_id"].astype(str).tolist()
    rows = zip(users, users, train["item_id"].astype(str), train["timestamp"], strict=True)
    return cornac.data.SequentialDataset.build(list(rows), fmt="USIT", seed=seed)


class CornacSequential(Model):
    """One of Cornac's next-item models (`key` in CLASSES) with its `[baselines.KEY]`
    parameters, fitted on one torch thread as the other torch baselines are."""

    store_based = False

    def __init__(self, key: str, params: BaseModel) -> None:
        self.key, self.params = key, params
        self.name = f"{CLASSES[key]} (Cornac)"
        self.lib = require_extra("cornac", f"cornac-{key}")

    def _build(self, sessions: int | None = None) -> Any:
        kwargs = self.params.model_dump()
        if sessions is not None and "batch_size" in kwargs:
            # GRU4Rec runs `batch_size` sessions side by side and fails on fewer sessions
            # with a next item ("Input batch size 25 doesn't match hidden0 batch size 30")
            kwargs["batch_size"] = max(1, min(kwargs["batch_size"], sessions))
        if self.key != "spop":  # SPop takes no seed and trains nothing
            kwargs |= {"verbose": False, "device": "cuda" if torch.cuda.is_available() else "cpu"}
        return getattr(self.lib.models, CLASSES[self.key])(**kwargs)

    def fit(self, catalog: Catalog) -> None:
        seed = getattr(self.params, "seed", 42)
        data = sequential_dataset(self.lib, catalog, f"cornac-{self.key}", seed)
        self.model = self._build(sum(len(ids) > 1 for ids in data.sessions.values()))
        with deterministic(seed, threads=1):
            self.model.fit(data)
        users = catalog.users["user_id"].astype(str)
        self.rows = users.map(data.uid_map).fillna(-1).astype(int).to_numpy()
        self.cols = catalog.items["item_id"].astype(str).map(data.iid_map).fillna(-1)
        self.cols = self.cols.astype(int).to_numpy()
        self.history = _histories(data)
        self.n_items = data.num_items

    def scores(self, users: np.ndarray) -> np.ndarray:
        rows = self.rows[users]
        known = rows[rows >= 0].tolist()
        histories = [self.history[row] for row in known]
        if self.key == "gru4rec":  # the same scores as Cornac's, all users at once
            scored = gru4rec_scores(self.model, histories)
        else:
            scored = one_by_one(self.model, known, histories)
        full = np.zeros((len(users), self.n_items), dtype=np.float32)
        full[rows >= 0] = scored[:, : self.n_items]
        return _gather(full, rows >= 0, self.cols)


def one_by_one(model: Any, users: list[int], histories: list[list[int]]) -> np.ndarray:
    """Cornac's own `score`, one user (Cornac index) and their history at a time."""
    with torch.no_grad():
        rows = [np.asarray(model.score(u, h)) for u, h in zip(users, histories, strict=True)]
    return np.stack(rows) if rows else np.zeros((0, model.total_items), dtype=np.float32)


def _histories(data: Any) -> dict[int, list[int]]:
    """Cornac user index -> the items of their session (one per user), in order."""
    users, items = data.uir_tuple[0], data.uir_tuple[1]
    return {int(users[ids[0]]): items[ids].tolist() for ids in data.sessions.values()}
