"""`[two_tower] ensemble = K`: K models alike but for their seeds, served as one by putting
their vectors side by side: the dot product is the mean of the members' scores, each member
is the model its seed alone would train, and what is saved, ingested and queried with a
served history is what evaluation scored."""

import json

import numpy as np
import pandas as pd
import pytest

from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.embedders.two_tower.embedder import TwoTowerItemEmbedder

DAY = 86400.0
N_ITEMS = 30


def shifting(n_users: int) -> pd.DataFrame:
    """Short sessions over 100 days: half the picks item i0 in the first 80 days, i1 after."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        t = rng.uniform(0, 100) * DAY
        for k in range(3):
            pick = ("i0" if t < 80 * DAY else "i1") if rng.random() < 0.5 else None
            rows.append((f"u{u}", pick or f"i{rng.integers(2, N_ITEMS)}", t + k * 60.0))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def config(days: float, **kw) -> TwoTowerConfig:
    """A small sequence tower with the staleness input and the popularity prior."""
    base = dict(
        dim=16, hidden=8, features=False, user_encoder="sequence", history=5, layers=1,
        heads=1, batch_size=256, val_fraction=0.0, lr=3e-3, threads=1,
        staleness_buckets=24, popularity_days=days,
    )  # fmt: skip
    return TwoTowerConfig(**(base | kw))


ITEMS = pd.DataFrame({"item_id": [f"i{n}" for n in range(N_ITEMS)] + ["unknown"]})
USERS = pd.DataFrame({"user_id": ["u1", "u5", "u9", "newcomer"]})


def scores(model: TwoTowerModel, log: pd.DataFrame, now: float) -> np.ndarray:
    return model.user_vectors(USERS, history=log, now=now) @ model.item_vectors(ITEMS).T


def test_an_ensemble_scores_the_mean_of_its_members_each_trained_alone(tmp_path):
    log = shifting(200)
    now = float(log["timestamp"].max())
    cfg = config(14, epochs=2, seed=7)
    ensemble = fit_two_tower(
        log, None, None, cfg.model_copy(update={"ensemble": 3}), progress=False
    )
    alone = [
        fit_two_tower(log, None, None, cfg.model_copy(update={"seed": s}), progress=False)
        for s in (7, 8, 9)
    ]
    want = np.mean([scores(m, log, now) for m in alone], axis=0)
    np.testing.assert_allclose(scores(ensemble, log, now), want, rtol=1e-5, atol=1e-6)
    # members differ (else the mean would be any one of them)
    assert not np.allclose(scores(alone[0], log, now), scores(alone[1], log, now), atol=1e-3)
    iv = ensemble.item_vectors(ITEMS)
    assert iv.shape[1] == ensemble.config.vector_dim == 3 * 17
    assert [row["member"] for row in ensemble.history] == [0, 0, 1, 1, 2, 2]
    # saved, loaded and ingested as evaluated
    path = ensemble.save(tmp_path / "e.pt")
    loaded = TwoTowerModel.load(path)
    np.testing.assert_allclose(scores(loaded, log, now), scores(ensemble, log, now), atol=1e-6)
    embedder = TwoTowerItemEmbedder(path)
    assert embedder.dim == 51
    np.testing.assert_allclose(embedder.embed(ITEMS), iv, atol=1e-6)
    # a query from a history read as served (the store's side-by-side item vectors)
    rows = log[log["user_id"] == "u5"].sort_values("timestamp")
    table = dict(zip(ITEMS["item_id"], iv, strict=True))
    read = np.stack([table[i] for i in rows["item_id"]])
    query = loaded.history_vectors([(read, rows["timestamp"].to_numpy())], None, now)
    np.testing.assert_allclose(query, ensemble.user_vectors(USERS.iloc[[1]], history=log, now=now),
                               atol=1e-6)  # fmt: skip


def test_a_static_ensemble_and_files_without_the_key(tmp_path):
    log = shifting(100)
    cfg = TwoTowerConfig(dim=8, hidden=8, features=False, epochs=1, val_fraction=0.0)
    ensemble = fit_two_tower(
        log, None, None, cfg.model_copy(update={"ensemble": 2}), progress=False
    )
    alone = [
        fit_two_tower(log, None, None, cfg.model_copy(update={"seed": s}), progress=False)
        for s in (42, 43)
    ]
    got = ensemble.user_vectors(USERS) @ ensemble.item_vectors(ITEMS).T
    want = np.mean([m.user_vectors(USERS) @ m.item_vectors(ITEMS).T for m in alone], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a file saved before the key existed is one model, as before
    path = alone[0].save(tmp_path / "old.pt")
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["config"]["ensemble"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = TwoTowerModel.load(path)
    assert loaded.config.ensemble == 1 and not loaded.members
    np.testing.assert_array_equal(loaded.item_vectors(ITEMS), alone[0].item_vectors(ITEMS))


def test_ensemble_must_be_positive():
    with pytest.raises(ValueError, match="ensemble"):
        TwoTowerConfig(ensemble=0)


def test_the_service_ranks_an_ensemble_as_its_mean_score(tmp_path):
    """Single and batch requests through a FAISS dot store and the `Recommender` return the
    ensemble's own top items for a request history."""
    from embedrec import open_store
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.failover import Failover
    from embedrec.retrieval.history import Interaction

    log = shifting(200)
    model = fit_two_tower(log, None, None, config(14, epochs=2, ensemble=2), progress=False)
    ids = ITEMS["item_id"].tolist()[:N_ITEMS]
    vectors = model.item_vectors(ITEMS.head(N_ITEMS))
    store = open_store(f"faiss:{tmp_path}?index=Flat&metric=dot", dim=34, metric="dot")
    store.upsert(ids, vectors, [{} for _ in ids])
    store.flush()
    rec = Recommender(two_tower=Failover("two-tower", store), model=model)
    now = float(log["timestamp"].max())
    asked = [
        [Interaction(i, now - 3600 * (3 - n)) for n, i in enumerate(h)]
        for h in (["i3", "i7", "i1"], ["i0"], ["i5", "i9"])
    ]
    width = model.members[0].config.vector_dim
    try:
        one = rec.recommend(None, 5, history=asked[0], now=now).hits.ids
        batch = rec.recommend_batch([None] * 3, 5, history=asked, now=[now] * 3)
        for events, results in zip(asked, batch, strict=True):
            read = np.stack([vectors[ids.index(e.item_id)] for e in events])
            times = np.array([e.timestamp for e in events])
            # the mean of the members' scores, each from its own part of the served vectors
            mean = np.mean(
                [
                    m.history_vectors([(read[:, k * width : (k + 1) * width], times)], None, now)
                    @ vectors[:, k * width : (k + 1) * width].T
                    for k, m in enumerate(model.members)
                ],
                axis=0,
            )[0]
            seen = {e.item_id for e in events}
            want = [ids[j] for j in np.argsort(-mean) if ids[j] not in seen][:5]
            assert results.hits.ids == want
        assert one == batch[0].hits.ids
    finally:
        rec.close()
