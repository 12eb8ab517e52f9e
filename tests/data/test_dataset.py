"""A dataset described by config alone: the shop log of shop_data.py trains, evaluates and
serves through the same code as MovieLens, and bad input names its file, row and column."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedrec import open_store
from embedrec.data.dataset import load_dataset
from embedrec.data.tables import CatalogError
from embedrec.embedders.two_tower import TwoTowerModel, fit_two_tower
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.leaderboard import evaluate
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.failover import Failover
from embedrec.retrieval.users import Interactions
from tests.data.shop_data import shop_beside_config
from tests.eval.models.test_two_tower import text_fn

CONFIG = Path(__file__).parents[2] / "configs" / "shop.toml"
QUICK = {"epochs = 40": "epochs = 3", "epochs = 60": "epochs = 3", "dim = 64": "dim = 16"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A folder holding data/shop/ (150 customers) and shop.toml with quick epochs."""
    root = tmp_path_factory.mktemp("shop")
    return shop_beside_config(root, CONFIG, users=150, quick=QUICK, name="shop.toml")


@pytest.fixture
def in_shop(shop, monkeypatch) -> Path:
    monkeypatch.chdir(shop)
    return shop


def test_shop_loads_into_canonical_columns(in_shop) -> None:
    config = load_experiment_config("shop.toml")
    data = load_dataset(config.data)
    assert list(data.interactions.columns) == ["user_id", "item_id", "timestamp", "weight"]
    orders = pd.read_parquet("data/shop/orders.parquet")
    assert len(data.interactions) == len(orders)
    first = orders.iloc[0]
    expected = pd.Timestamp(first["ordered_at"]).timestamp()
    assert data.interactions["timestamp"].iloc[0] == int(expected)
    assert data.interactions["user_id"].iloc[0] == first["customer"]
    assert data.interactions["weight"].iloc[0] == first["quantity"]
    assert data.items["item_id"].iloc[0] == "SKU-00001" and "categories" in data.items
    assert set(data.users.columns) == {"user_id", "birth_year", "segment"}
    # numeric features of a CSV catalog and a TSV user table come out as numbers
    products = pd.read_csv("data/shop/products.csv")
    assert data.items["price"].dtype == np.float64
    assert data.items["price"].tolist() == pytest.approx(products["price"].tolist())
    assert data.users["birth_year"].dtype == np.float64
    kinds = [(f.kind, f.column) for f in data.towers.item.features]
    assert kinds == [("text", None), ("multi", "categories"), ("numeric", "price")]


def _config_with(root: Path, old: str, new: str) -> Path:
    path = root / "variant.toml"
    text = (root / "shop.toml").read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def _bad_orders(root: Path, rows: list[dict]) -> None:
    folder = root / "bad"
    folder.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "orders.csv", index=False)


GOOD = {"customer": "C0001", "sku": "SKU-00001", "ordered_at": "1997-10-01T10:00:00Z",
        "quantity": "1", "stars": "4"}  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "change", "message"),
    [
        ([GOOD], ('user = "customer"', 'user = "client"'),
         r"orders\.csv, row 1, field 'client': no column 'client'; the file has: 'customer'"),
        ([GOOD, GOOD, {**GOOD, "customer": ""}], None,
         r"orders\.csv, row 4, field 'customer': the id is missing"),
        ([GOOD, {**GOOD, "stars": "five"}], ('weight = "quantity"', 'rating = "stars"'),
         r"orders\.csv, row 3, field 'stars': a rating must be a number, got 'five'"),
        ([GOOD, {**GOOD, "ordered_at": "last tuesday"}], None,
         r"row 3, field 'ordered_at': a timestamp must be a number or ISO 8601, got 'last "),
        ([GOOD, {**GOOD, "sku": "SKU-99999"}, {**GOOD, "sku": "SKU-99998"}], None,
         r"orders\.csv, row 3, field 'sku': 2 interactions name items missing from "
         r"\S*data/shop/products\.csv, the first 'SKU-99999'"),
    ],
)  # fmt: skip
def test_bad_interactions_name_file_row_and_column(in_shop, rows, change, message) -> None:
    _bad_orders(in_shop, rows)
    path = _config_with(in_shop, "data/shop/orders.parquet", "bad/orders.csv")
    if change is not None:
        text = path.read_text().replace(*change)
        path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_dataset(load_experiment_config(path).data)


def test_bad_feature_value_and_duplicate_id_in_the_catalog(in_shop) -> None:
    products = pd.read_csv("data/shop/products.csv", dtype=str)
    folder = in_shop / "bad"
    folder.mkdir(exist_ok=True)
    products.assign(price=["n/a", *products["price"][1:]]).to_csv(folder / "p.csv", index=False)
    path = _config_with(in_shop, "data/shop/products.csv", "bad/p.csv")
    with pytest.raises(CatalogError, match=r"p\.csv, row 2, field 'price': a number, got 'n/a'"):
        load_dataset(load_experiment_config(path).data)
    pd.concat([products, products.head(1)]).to_csv(folder / "p.csv", index=False)
    with pytest.raises(CatalogError, match=r"row \d+, field 'sku': duplicate id 'SKU-00001'"):
        load_dataset(load_experiment_config(path).data)


def test_a_non_number_in_a_numeric_user_feature_names_file_row_and_column(in_shop) -> None:
    customers = pd.read_csv("data/shop/customers.tsv", sep="\t", dtype=str)
    folder = in_shop / "bad"
    folder.mkdir(exist_ok=True)
    years = customers["birth_year"].tolist()
    years[3], years[4] = "", "19x0"  # a blank cell is a missing value, not an error
    customers.assign(birth_year=years).to_csv(folder / "c.tsv", sep="\t", index=False)
    path = _config_with(in_shop, "data/shop/customers.tsv", "bad/c.tsv")
    with pytest.raises(
        CatalogError, match=r"c\.tsv, row 6, field 'birth_year': a number, got '19x0'"
    ):
        load_dataset(load_experiment_config(path).data)
    years[4] = " 1970 "
    customers.assign(birth_year=years).to_csv(folder / "c.tsv", sep="\t", index=False)
    users = load_dataset(load_experiment_config(path).data).users
    assert np.isnan(users["birth_year"][3]) and users["birth_year"][4] == 1970.0


def test_min_rating_leaves_out_low_ratings_and_says_so(in_shop) -> None:
    _bad_orders(in_shop, [GOOD, {**GOOD, "stars": "2"}, {**GOOD, "stars": "5"}])
    path = _config_with(in_shop, "data/shop/orders.parquet", "bad/orders.csv")
    path.write_text(
        path.read_text().replace('weight = "quantity"', 'rating = "stars"\nmin_rating = 3')
    )
    data = load_dataset(load_experiment_config(path).data)
    assert data.interactions["rating"].tolist() == [4.0, 5.0]
    assert "1 interactions rated below 3" in data.notes[0]


@pytest.fixture(scope="module")
def trained(shop) -> Path:
    """`embedrec train shop.toml`, run in the shop folder."""
    from embedrec.cli import main

    cwd = Path.cwd()
    try:
        os.chdir(shop)
        assert main(["train", "shop.toml", "--out", "models/shop.pt"]) == 0
    finally:
        os.chdir(cwd)
    return shop / "models" / "shop.pt"


def test_shop_model_records_its_features_and_trains_on_weights(trained) -> None:
    model = TwoTowerModel.load(trained, text_fn=text_fn)
    assert model.towers.user.id == "customer" and model.towers.item.id == "sku"
    assert [f.column for f in model.towers.user.features] == ["birth_year", "segment"]
    assert model.validate_user({"birth_year": 1970}) == {"birth_year": 1970, "segment": None}


@pytest.mark.slow  # every model on three splits and the cold-start report
def test_shop_evaluates_on_time_splits(in_shop) -> None:
    config = load_experiment_config("shop.toml")
    config.eval.stores = []
    board = evaluate(config, text_fn=text_fn, progress=False)
    splits = {r["split"] for r in board["rows"]}
    assert splits == {"global temporal 75/25 (train before, test after)",
                      "leave-last-out per user", "random 75/25 (seed 42)"}  # fmt: skip
    models = {r["model"] for r in board["rows"] if r["source"] == "embedrec"}
    assert {"most popular", "two-tower hybrid", "BPR-MF (ids only)"} <= models
    assert all(0 <= r["ndcg@10"] <= 1 for r in board["rows"] if r["source"] == "embedrec")
    assert board["dataset"] == "orders"
    assert board["cold_start"][0]["model"] == "most popular (by group)"


def test_shop_item_vectors_reach_a_store_and_serve(trained, in_shop, tmp_path) -> None:
    columns = ColumnMap(
        id="sku", text="{name}", metadata=parse_metadata_spec("name,categories,price:float")
    )
    uri = f"faiss:{tmp_path / 'shop-store'}"
    embedder = f"two-tower:{trained}"
    summary = ingest(Source("data/shop/products.csv", columns), uri, embedder,
                     manifest=tmp_path / "m.sqlite")  # fmt: skip
    assert summary.upserted == 1682
    model = TwoTowerModel.load(trained, text_fn=text_fn)
    data = load_dataset(load_experiment_config("shop.toml").data)
    store = open_store(uri)
    stored = store.fetch(["SKU-00050"])[0]
    row = data.items[data.items["item_id"] == "SKU-00050"]
    np.testing.assert_allclose(stored.vector, model.item_vectors(row)[0], atol=1e-5)
    rec = Recommender(
        two_tower=Failover("two-tower", store),
        model=model,
        interactions=Interactions.from_frames(data.users, data.interactions),
    )
    known = rec.recommend("C0001", 5)
    assert known.source == "two-tower" and len(known.hits) == 5
    bought = set(data.interactions.loc[data.interactions["user_id"] == "C0001", "item_id"])
    assert not bought & {h.id for h in known.hits}
    new = rec.recommend("C9999", 5, features={"birth_year": 1980, "segment": "business"})
    assert new.source == "features" and len(new.hits) == 5
    with pytest.raises(ValueError, match=r"column 'age': not a feature of this model"):
        rec.recommend("C9999", 5, features={"age": 30, "segment": "business"})
    shutil.rmtree(tmp_path / "shop-store")


def test_jsonl_interactions_without_a_user_table_train_ids_only_users(in_shop) -> None:
    orders = pd.read_parquet("data/shop/orders.parquet").head(300)
    (in_shop / "bad").mkdir(exist_ok=True)
    orders.to_json(in_shop / "bad" / "orders.jsonl", orient="records", lines=True)
    path = _config_with(in_shop, "data/shop/orders.parquet", "bad/orders.jsonl")
    text = path.read_text()
    path.write_text(text[: text.index("[data.users]")] + text[text.index("[two_tower]") :])
    data = load_dataset(load_experiment_config(path).data)
    assert data.towers.user.features == [] and data.towers.user.id == "customer"
    assert sorted(data.users["user_id"]) == sorted(orders["customer"].unique())
    config = load_experiment_config(path).two_tower.model_copy(
        update={"epochs": 1, "val_fraction": 0.0}
    )
    model = fit_two_tower(data.interactions, data.users, data.items, config,
                              towers=data.towers, text_fn=text_fn, progress=False)  # fmt: skip
    assert model.user_encoder.width == 0 and model.item_encoder.width > 0
    assert np.isfinite(model.user_vectors(data.users.head(3))).all()


def test_a_serve_config_recommends_from_the_shop_model_over_http(
    trained, in_shop, tmp_path
) -> None:
    from starlette.testclient import TestClient

    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.config import ServeConfig

    columns = ColumnMap(
        id="sku", text="{name}", metadata=parse_metadata_spec("name,categories,price:float")
    )
    uri = f"faiss:{tmp_path / 'served'}"
    ingest(Source("data/shop/products.csv", columns), uri, f"two-tower:{trained}",
           manifest=tmp_path / "m.sqlite")  # fmt: skip
    config = ServeConfig.model_validate(
        {"two_tower": {"uri": uri, "model": str(trained)}, "users": {"data": "shop.toml"}}
    )
    rec = Recommender.from_config(config)
    try:
        client = TestClient(create_app(rec))
        known = client.post("/recommend", json={"user_id": "C0002", "k": 4}).json()
        assert known["source"] == "two-tower" and len(known["results"]) == 4
        features = {"birth_year": 1975, "segment": "consumer"}
        body = {"user_id": "new", "k": 3, "features": features}
        new = client.post("/recommend", json=body).json()
        assert new["source"] == "features" and len(new["results"]) == 3
        body["features"] = {"birth_year": "old", "segment": "consumer"}
        bad = client.post("/recommend", json=body)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["loc"] == ["body", "features", "birth_year"]
        assert "a number, got 'old'" in bad.json()["errors"][0]["msg"]
    finally:
        rec.close()
