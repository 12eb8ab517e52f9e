"""The sequence tower's time-aware popularity prior (`popularity_days`): the trailing counts
come strictly from before each query's time; a planted log where the item popular overall
differs from the one popular just before the cut; the served vectors' dot product is the
model's score; files saved before the key existed load."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.embedders.two_tower.embedder import TwoTowerItemEmbedder
from embedrec.embedders.two_tower.model import Vocab
from embedrec.embedders.two_tower.popularity import BINS, TrailingCounts
from embedrec.embedders.two_tower.sequence import staleness_buckets
from embedrec.embedders.two_tower.sequence_training import Windows, user_sequences

DAY = 86400.0
N_ITEMS = 30


def shifting(seed: int = 0) -> pd.DataFrame:
    """100 days of short sessions over N_ITEMS items: in the first 80 days half the picks
    are item i0, in the last 20 half are i1, the rest uniform. So i0 is the most popular
    overall (about 4x i1) and i1 the most popular in the last weeks."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(400):
        t = rng.uniform(0, 100) * DAY
        hot = "i0" if t < 80 * DAY else "i1"
        for k in range(3):
            pick = hot if rng.random() < 0.5 else f"i{rng.integers(2, N_ITEMS)}"
            rows.append((f"u{u}", pick, t + k * 60.0))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def config(days: float, **kw) -> TwoTowerConfig:
    base = dict(
        dim=16, hidden=8, features=False, user_encoder="sequence", history=5, layers=1,
        heads=1, epochs=15, batch_size=256, val_fraction=0.0, lr=3e-3, threads=1,
        staleness_buckets=24, popularity_days=days,
    )  # fmt: skip
    return TwoTowerConfig(**(base | kw))


def brute_counts(times: np.ndarray, items: np.ndarray, item: int, at: float, counts) -> int:
    """The rule of popularity.py, written out: the item's interactions in the BINS bins
    before the bin holding `at` (bins counted back from the last time)."""
    edge = counts.end - counts.width * np.ceil((counts.end - at) / counts.width)
    window = counts.width * BINS
    return int(np.sum((items == item) & (times < edge) & (times >= edge - window)))


def test_counts_come_strictly_before_each_target():
    log = shifting()
    vocab_items = {f"i{n}": n + 1 for n in range(N_ITEMS)}
    items = log["item_id"].map(vocab_items).to_numpy()
    times = log["timestamp"].to_numpy()
    counts = TrailingCounts.of(items, times, days=14)
    rng = np.random.default_rng(1)
    for row in rng.choice(len(log), size=200, replace=False):
        at, item = times[row], items[row]
        got = counts.log_counts(torch.tensor([item]), torch.from_numpy(counts.bins([at])))
        want = brute_counts(times, items, item, at, counts)
        assert got.item() == pytest.approx(np.log1p(want))
        # nothing at or after the target's own time is counted
        assert want <= np.sum(
            (items == item) & (times < at) & (times >= at - 14 * DAY - counts.width)
        )
    # an item seen once: its own interaction never counts for it as a target
    lone = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
                         "timestamp": [0.0, DAY, 2 * DAY]})  # fmt: skip
    vocab = Vocab(users={"a": 1, "b": 2}, items={"x": 1, "y": 2})
    lone_counts = TrailingCounts.of(np.array([1, 2, 1]), lone["timestamp"].to_numpy(), days=7)
    windows = Windows.of(user_sequences(lone, vocab), 5, config(7.0), lone_counts)
    at = windows.targets > 0  # the one target: y on day 1, after x on day 0
    assert windows.targets[at].tolist() == [2]
    target_bins = windows.bins[at]
    assert lone_counts.log_counts(torch.tensor([2]), target_bins).item() == 0.0  # not itself
    assert lone_counts.log_counts(torch.tensor([1]), target_bins).item() == pytest.approx(
        np.log1p(1)  # x on day 0, not x on day 2
    )


def top_for(model: TwoTowerModel, log: pd.DataFrame, users: list[str], now: float) -> list[str]:
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(N_ITEMS)]})
    uv = model.user_vectors(pd.DataFrame({"user_id": users}), history=log, now=now)
    best = np.argmax(uv @ model.item_vectors(items).T, axis=1)
    return [items["item_id"][b] for b in best]


@pytest.mark.slow
def test_the_item_popular_at_the_cut_comes_first_for_new_and_stale_users():
    log = shifting()
    assert log["item_id"].value_counts().index[0] == "i0"
    cut = log["timestamp"].max()
    stale = log.loc[log["timestamp"] < 40 * DAY, "user_id"].unique()[:20].tolist()
    users = ["newcomer", *stale]
    with_prior = fit_two_tower(log, None, None, config(14), progress=False)
    without = fit_two_tower(log, None, None, config(0), progress=False)
    got = top_for(with_prior, log, users, cut)
    base = top_for(without, log, users, cut)
    print(f"with the time prior: {got}; without: {base}")
    assert got[0] == "i1" and np.mean([g == "i1" for g in got[1:]]) >= 0.9
    assert base[0] != "i1" and np.mean([b == "i1" for b in base[1:]]) <= 0.3


def test_served_dot_product_is_the_models_score(tmp_path):
    log = shifting().head(600)
    model = fit_two_tower(log, None, None, config(14, epochs=2), progress=False)
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(N_ITEMS)] + ["unknown"]})
    users = pd.DataFrame({"user_id": ["u1", "u5", "newcomer"]})
    now = log["timestamp"].max()
    uv, iv = model.user_vectors(users, history=log, now=now), model.item_vectors(items)
    assert uv.shape[1] == iv.shape[1] == model.config.vector_dim == 17
    # the score, part by part: the tower's output . the item tower's vector + the weight of
    # the user's staleness bucket x the item's trailing log count at the end of training
    dim, tower = model.config.dim, model.user_tower
    ids, _ = model.item_features(items)
    v = model.item_tower(ids, None).detach().numpy()
    times, ids_of = log["timestamp"].to_numpy(), log["item_id"].to_numpy()
    width = 14 * DAY / BINS
    counts = [np.sum((ids_of == i) & (times < now) & (times >= now - BINS * width))
              for i in items["item_id"]]  # fmt: skip
    histories = [
        (None, log.loc[log["user_id"] == u, "timestamp"].sort_values().to_numpy())
        for u in users["user_id"]
    ]
    buckets = staleness_buckets(histories, np.full(3, now), 24)
    w = tower.popularity.weight[torch.from_numpy(buckets), 0].detach().numpy()
    score = uv[:, :dim] @ v.T + w[:, None] * np.log1p(counts)[None, :]
    np.testing.assert_allclose(uv @ iv.T, score, rtol=1e-5, atol=1e-5)
    assert iv[-1, -1] == 0.0  # an item the model never saw: no count
    # what is saved is what is served
    path = model.save(tmp_path / "m.pt")
    loaded = TwoTowerModel.load(path)
    np.testing.assert_allclose(loaded.item_vectors(items), iv, atol=1e-6)
    embedder = TwoTowerItemEmbedder(path)  # what `ingest --embedder two-tower:PATH` stores
    assert embedder.dim == 17
    np.testing.assert_allclose(embedder.embed(items), iv, atol=1e-6)
    np.testing.assert_allclose(loaded.user_vectors(users, history=log, now=now), uv, atol=1e-6)


def test_files_saved_before_popularity_days_load(tmp_path):
    log = shifting().head(300)
    model = fit_two_tower(log, None, None, config(0, epochs=1), progress=False)
    path = model.save(tmp_path / "old.pt")
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["config"]["popularity_days"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    state = torch.load(path, weights_only=True)
    del state["popularity"]
    torch.save(state, path)
    loaded = TwoTowerModel.load(path)
    assert loaded.config.popularity_days == 0 and loaded.config.vector_dim == 16
    users = pd.DataFrame({"user_id": ["u1", "newcomer"]})
    np.testing.assert_allclose(
        loaded.user_vectors(users, history=log), model.user_vectors(users, history=log), atol=1e-6
    )
    items = pd.DataFrame({"item_id": ["i0", "i3"]})
    np.testing.assert_allclose(loaded.item_vectors(items), model.item_vectors(items), atol=1e-6)


def test_popularity_days_needs_the_sequence_encoder():
    with pytest.raises(ValueError, match="popularity_days"):
        TwoTowerConfig(popularity_days=7)


def test_ingest_makes_a_dot_store_for_the_popularity_coordinate(tmp_path):
    """`ingest --embedder two-tower:PATH` of a model with the prior creates a `dot` store
    where the URI names no metric, and refuses one that would rescale the coordinate."""
    from embedrec import open_store
    from embedrec.ingestion.columns import ColumnMap
    from embedrec.ingestion.pipeline import ingest
    from embedrec.ingestion.sources import Source
    from embedrec.ingestion.summary import IngestOptions
    from embedrec.stores.errors import ConfigError

    model = fit_two_tower(shifting().head(300), None, None, config(14, epochs=1), progress=False)
    embedder = TwoTowerItemEmbedder(model.save(tmp_path / "m.pt"))
    catalog = tmp_path / "items.csv"
    catalog.write_text("id,name\n" + "".join(f"i{n},item {n}\n" for n in range(N_ITEMS)))
    source = Source(catalog, ColumnMap(id="id", text="{name}"))
    options = IngestOptions()
    ingest(source, f"faiss:{tmp_path}/a", "x", options, embedder=embedder)
    store = open_store(f"faiss:{tmp_path}/a")
    assert (store.metric, store.dim, store.count()) == ("dot", 17, N_ITEMS)
    store.close()
    with pytest.raises(ConfigError, match="contradicts the URI's 'cosine'"):
        ingest(source, f"faiss:{tmp_path}/b?metric=cosine", "x", options, embedder=embedder)
