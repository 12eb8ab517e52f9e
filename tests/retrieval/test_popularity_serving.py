"""A sequence model with `popularity_days` served from a dot-product store: the store holds
the item vectors with their count coordinate, the query carries the weight, and the
service returns the model's own top items for a request history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedrec import open_store
from embedrec.data.movielens import load_movielens
from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.failover import Failover
from embedrec.retrieval.history import Interaction
from embedrec.retrieval.users import Interactions
from embedrec.stores.errors import ConfigError
from tests.retrieval.conftest import Data


def test_the_service_ranks_as_the_model_scores(data: Data, tmp_path):
    config = TwoTowerConfig(
        user_encoder="sequence", history=20, layers=1, heads=2, dim=16, hidden=32,
        features=False, epochs=1, val_fraction=0.0, device="cpu", staleness_buckets=24,
        popularity_days=30,
    )  # fmt: skip
    model: TwoTowerModel = fit_two_tower(data.ratings, None, None, config, progress=False)
    with torch.no_grad():  # a weight the popularity term shows in the ranking with
        model.user_tower.popularity.weight[:] = 0.3
    items = load_movielens().items.head(len(data.item_ids))
    vectors = model.item_vectors(items)
    assert vectors.shape[1] == 17
    store = open_store(f"faiss:{tmp_path}?index=Flat&metric=dot", dim=17, metric="dot")
    store.upsert(list(data.item_ids), vectors, list(data.item_meta))
    store.flush()
    interactions = Interactions.from_frames(data.users, data.ratings)
    rec = Recommender(
        two_tower=Failover("two-tower", store), model=model, interactions=interactions
    )
    try:
        now = float(data.ratings["timestamp"].max())
        history = [Interaction(i, now - 3600 * (3 - n)) for n, i in enumerate(["50", "181", "258"])]
        got = rec.recommend(None, 10, history=history, now=now).hits.ids
        table = dict(zip(items["item_id"].astype(str), vectors, strict=True))
        read = np.stack([table[e.item_id] for e in history])  # as served: with the counts
        times = np.array([e.timestamp for e in history])
        query = model.history_vectors([(read, times)], None, now)
        scores = (query @ vectors.T)[0]
        order = [str(items["item_id"][k]) for k in np.argsort(-scores)]
        want = [i for i in order if i not in {"50", "181", "258"}][:10]
        assert got == want
    finally:
        rec.close()
    cosine = open_store(f"faiss:{tmp_path}/cos?index=Flat", dim=17)
    with pytest.raises(ConfigError, match="must use metric=dot"):
        Recommender(two_tower=Failover("two-tower", cosine), model=model)
    cosine.close()
