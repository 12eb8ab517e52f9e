import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedrec import open_store
from embedrec.common.files import file_sha256
from embedrec.data.dataset import load_dataset
from embedrec.embedders.two_tower import (
    FeatureError,
    TwoTowerConfig,
    TwoTowerItemEmbedder,
    TwoTowerModel,
    default_text_fn,
    fit_two_tower,
)
from embedrec.eval.models.baselines import Catalog, MostPopular, TwoTower
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.leaderboard import score_model
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.ranking.splits import stratified_split


@functools.cache
def _text_fn():
    return default_text_fn()


def text_fn(titles: list[str]) -> np.ndarray:
    """The real all-MiniLM-L6-v2 title embeddings, through the on-disk embedding cache."""
    return _text_fn()(titles)


CONFIG = Path(__file__).parents[3] / "configs" / "two_tower.toml"
TOWERS = load_experiment_config(CONFIG).data.towers()


@pytest.fixture(scope="module")
def ml():
    """MovieLens as configs/two_tower.toml declares it, cut to the first 200 users."""
    data = load_dataset(load_experiment_config(CONFIG).data)
    users = data.users[data.users["user_id"].astype(int) <= 200]
    ratings = data.ratings[data.ratings["user_id"].isin(set(users["user_id"]))]
    return users, data.items, ratings


TINY = TwoTowerConfig(dim=16, hidden=32, epochs=3, batch_size=512, val_fraction=0.0,
                      text_components=8, temperature=0.1, lr=3e-3)  # fmt: skip


def fit(ml, config=TINY) -> TwoTowerModel:
    users, items, ratings = ml
    return fit_two_tower(
        ratings, users, items, config, towers=TOWERS, text_fn=text_fn, progress=False
    )


@pytest.fixture(scope="module")
def model(ml) -> TwoTowerModel:
    return fit(ml)


def test_same_seed_same_vectors_other_seed_differs(ml) -> None:
    users, items, _ = ml
    # with early stopping and refit, so that every random draw is covered
    config = TINY.model_copy(update={"epochs": 2, "val_fraction": 0.2, "patience": 1})
    a, b = fit(ml, config), fit(ml, config)
    np.testing.assert_array_equal(a.item_vectors(items), b.item_vectors(items))
    np.testing.assert_array_equal(a.user_vectors(users), b.user_vectors(users))
    assert a.history == b.history
    c = fit(ml, config.model_copy(update={"seed": 7, "epochs": 1, "val_fraction": 0.0}))
    assert not np.allclose(a.item_vectors(items), c.item_vectors(items))


def test_vectors_are_unit_float32(ml, model) -> None:
    _, items, _ = ml
    vecs = model.item_vectors(items)
    assert vecs.dtype == np.float32 and vecs.shape == (len(items), 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_save_load_round_trip_and_item_embedder(ml, model, tmp_path) -> None:
    users, items, _ = ml
    path = model.save(tmp_path / "tt.pt")
    assert path.with_suffix(".json").is_file()
    again = TwoTowerModel.load(path, text_fn=text_fn)
    assert again.config == model.config and again.vocab == model.vocab
    assert again.towers == model.towers == TOWERS
    np.testing.assert_array_equal(again.item_vectors(items), model.item_vectors(items))
    np.testing.assert_array_equal(again.user_vectors(users), model.user_vectors(users))
    embedder = TwoTowerItemEmbedder(path, text_fn=text_fn)
    assert file_sha256(path) in embedder.name and embedder.modality == "item"
    rows = items.head(5).to_dict("records")
    np.testing.assert_array_equal(embedder.embed(rows), model.item_vectors(items.head(5)))


def test_load_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        TwoTowerModel.load(tmp_path / "nope.pt")


def test_new_items_and_users_get_feature_only_vectors(ml, model) -> None:
    users, items, _ = ml
    known = items.head(3)
    new = known.assign(item_id=["new-1", "new-2", "new-3"])
    cold, warm = model.item_vectors(new), model.item_vectors(known)
    assert np.isfinite(cold).all()
    assert not np.allclose(cold, warm)  # the id embedding mattered for the known ones
    assert not np.allclose(cold[0], cold[1])  # features alone still tell items apart
    twin = new.iloc[[0]].assign(item_id="new-9")
    np.testing.assert_allclose(model.item_vectors(twin)[0], cold[0], atol=1e-6)
    stranger = users.head(1).assign(user_id="u-unknown")
    assert np.isfinite(model.user_vectors(stranger)).all()


def test_bad_rows_name_the_field(ml, model) -> None:
    _, items, _ = ml
    with pytest.raises(FeatureError, match=r"column 'genres': missing"):
        model.item_vectors(items.drop(columns="genres"))
    with pytest.raises(FeatureError, match=r"column 'genres': a list, got 'Comedy'"):
        model.item_vectors(items.head(1).assign(genres="Comedy"))
    with pytest.raises(FeatureError, match=r"column 'year': a number, got 'soon'"):
        model.item_vectors(items.head(1).assign(year="soon"))


def test_new_user_features_are_checked_against_the_declared_ones(model) -> None:
    ok = {"age": 30, "gender": "F", "occupation": "writer"}
    assert model.validate_user(ok) == ok
    with pytest.raises(FeatureError, match=r"column 'zip': not a feature of this model"):
        model.validate_user({**ok, "zip": "10001"})
    partial = model.validate_user({"age": 30, "gender": "F"})  # occupation: its unknown bucket
    assert partial == {**ok, "occupation": None}
    assert model.towers.user.missing(partial) == ["occupation"]
    with pytest.raises(FeatureError, match=r"column 'age': a number, got 'old'"):
        model.validate_user({**ok, "age": "old"})
    unseen = model.user_vectors([{"user_id": "new", **ok, "occupation": "astronaut"}])
    assert np.isfinite(unseen).all()  # an unseen category takes the out-of-vocabulary bucket


def _fit_against_popularity(ml, update: dict) -> tuple[TwoTower, float, float]:
    """TINY with `update` fitted on a stratified 75/25 split: (model, its NDCG@10, most
    popular's NDCG@10)."""
    users, items, ratings = ml
    train, test = stratified_split(ratings, 0.75, filter_by="item", seed=42)
    catalog = Catalog.trained_on(users, items, train, TOWERS)
    pop = MostPopular()
    pop.fit(catalog)
    tt = TwoTower("two-tower", TINY.model_copy(update=update), text_fn, progress=False)
    tt.fit(catalog)
    return (
        tt,
        score_model(tt, catalog, test, 10)["ndcg@10"],
        score_model(pop, catalog, test, 10)["ndcg@10"],
    )


def test_tiny_training_beats_popularity(ml) -> None:
    _, tt_ndcg, pop_ndcg = _fit_against_popularity(ml, {"epochs": 8, "dim": 32})
    assert tt_ndcg > pop_ndcg, (tt_ndcg, pop_ndcg)


def test_ids_only_bpr_trains_without_features(ml) -> None:
    users, items, ratings = ml
    config = TwoTowerConfig(features=False, text=False, loss="bpr", normalize=False, dim=8,
                            epochs=2, val_fraction=0.0, id_dropout=0.0)  # fmt: skip
    model = fit_two_tower(
        ratings, users.drop(columns=["age"]), items, config, towers=TOWERS, progress=False
    )
    assert model.item_tower.mlp is None
    assert np.isfinite(model.item_vectors(pd.DataFrame({"item_id": ["1", "2"]}))).all()


def test_full_softmax_trains_and_beats_popularity(ml) -> None:
    update = {"epochs": 6, "dim": 32, "negatives": "all"}
    tt, tt_ndcg, pop_ndcg = _fit_against_popularity(ml, update)
    assert tt.model is not None and len(tt.model.history) == 6
    assert tt_ndcg > pop_ndcg


BPR = TwoTowerConfig(features=False, text=False, loss="bpr", normalize=False, dim=8, epochs=2,
                     val_fraction=0.0, id_dropout=0.0)  # fmt: skip


def test_item_bias_is_the_last_coordinate_and_the_user_side_is_one(ml) -> None:
    users, items, ratings = ml
    config = BPR.model_copy(update={"item_bias": True, "optimizer": "sgd", "lr": 0.05})
    model = fit_two_tower(ratings, users, items, config, towers=TOWERS, progress=False)
    u, v = model.user_vectors(users), model.item_vectors(items)
    assert u.shape[1] == v.shape[1] == 8
    np.testing.assert_array_equal(u[:, -1], 1.0)
    assert np.ptp(v[:, -1]) > 0  # learned: popular items get a higher bias
    with pytest.raises(ValueError, match="item_bias needs normalize = false"):
        TwoTowerConfig(item_bias=True)


def test_rejected_negatives_are_the_users_own_items() -> None:
    from embedrec.embedders.two_tower.training import Sampling

    u, i = torch.tensor([1, 1, 2]), torch.tensor([3, 4, 3])
    sampling = Sampling.of(u, i, n_items=5, device=torch.device("cpu"))
    # keys below, between and above the sorted interacted keys
    j = torch.tensor([3, 5, 4, 1, 5])
    got = sampling.interacted(torch.tensor([1, 1, 2, 0, 2]), j)
    assert got.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(sampling.log_q[[3, 4]].exp().numpy(), [2 / 3, 1 / 3], rtol=1e-6)


def test_id_embeddings_start_at_init_std_and_sgd_keeps_their_gradients_sparse() -> None:
    from embedrec.embedders.two_tower.model import _Tower

    small = BPR.model_copy(update={"dim": 64, "init_std": 0.0015, "optimizer": "sgd"})
    tower = _Tower(5000, 0, small, user=False)
    assert float(tower.ids.weight.detach().std()) == pytest.approx(0.0015, rel=0.05)
    assert tower.ids.sparse
    # BPR's own default start, and dense gradients for Adam (it has no sparse form here)
    default = _Tower(5000, 0, BPR.model_copy(update={"dim": 64}), user=False)
    assert float(default.ids.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert not default.ids.sparse


def test_rejection_changes_bpr_training(ml) -> None:
    users, items, ratings = ml
    # dense users (200 users, some with hundreds of items) draw their own items often
    plain = fit_two_tower(ratings, users, items, BPR, towers=TOWERS, progress=False)
    rejecting = fit_two_tower(
        ratings, users, items, BPR.model_copy(update={"reject_positives": True}),
        towers=TOWERS, progress=False,
    )  # fmt: skip
    assert plain.history[0]["loss"] != rejecting.history[0]["loss"]


def test_item_vectors_through_the_ingestion_pipeline(ml, model, tmp_path) -> None:
    _, items, _ = ml
    path = model.save(tmp_path / "tt.pt")
    head = items.head(40)
    catalog = tmp_path / "items.jsonl"
    with catalog.open("w") as fh:
        for row in head.to_dict("records"):
            fields = {k: v for k, v in row.items() if not (k == "year" and pd.isna(v))}
            fh.write(json.dumps({**fields, "genres": list(row["genres"])}, default=int) + "\n")
    columns = ColumnMap(
        id="item_id", text="{title}", metadata=parse_metadata_spec("title,year:int,genres:list")
    )
    uri = f"faiss:{tmp_path / 'tt-store'}"
    summary = ingest(
        Source(catalog, columns), uri, f"two-tower:{path}", manifest=tmp_path / "m.sqlite"
    )
    assert summary.upserted == 40
    store = open_store(uri)
    got = store.fetch(head["item_id"].tolist())
    np.testing.assert_allclose(
        np.stack([r.vector for r in got]), model.item_vectors(head), atol=1e-5
    )
