"""The app's data access without Streamlit: filter fields from metadata, the new-user form
from the model's declaration (else the user table), catalogs found through ingestion
manifests, and result files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from embedrec import open_store
from embedrec.common.settings import CACHE_ENV
from embedrec.ingestion.manifest import ingested_catalog
from embedrec.retrieval.config import UsersConfig
from embedrec.ui.catalog import FieldSpec, field_specs, load_catalog
from embedrec.ui.results import BenchRun, Leaderboard, ResultsError, find
from embedrec.ui.users import FeatureInput, UserData, user_feature_inputs
from tests.ui.conftest import UIFiles

USERS = pd.DataFrame(
    {
        "user_id": ["1", "2", "3"],
        "age": [24, 53, 31],
        "gender": ["M", "F", "M"],
        "zip": ["85711", "94043", "32067"],
    }
)


def test_field_specs_take_each_fields_kind() -> None:
    rows = [
        {"title": "A", "year": 1990, "genres": ["Drama"], "score": 1.5, "new": True},
        {"title": "B", "year": 2001, "genres": ["Comedy", "Drama"], "score": 2, "new": False},
        {"title": "C", "genres": [], "score": 0.5, "mixed": 1},
        {"title": "D", "year": 1995, "genres": ["War"], "mixed": "x"},
    ]
    specs = {s.name: s for s in field_specs(rows)}
    assert specs["genres"] == FieldSpec("genres", "list", ("Comedy", "Drama", "War"))
    assert specs["year"] == FieldSpec("year", "int", low=1990, high=2001)
    assert specs["score"] == FieldSpec("score", "float", low=0.5, high=2)
    assert specs["new"].kind == "bool"
    assert specs["title"].options == ("A", "B", "C", "D")
    assert "mixed" not in specs, "a field whose values mix kinds offers no widget"
    many = [{"name": f"n{i}"} for i in range(100)]
    assert field_specs(many) == [], "too many distinct strings to choose from"


def test_new_user_form_follows_the_models_declaration(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    declared = [
        {"kind": "categorical", "column": "gender"},
        {"kind": "numeric", "column": "age"},
        {"kind": "text", "template": "{bio}"},
    ]
    model.with_suffix(".json").write_text(json.dumps({"towers": {"user": {"features": declared}}}))
    assert user_feature_inputs(USERS, model) == [
        FeatureInput("gender", "choice", ("F", "M")),
        FeatureInput("age", "number", low=24, high=53, integer=True),
    ]


def test_new_user_form_falls_back_to_the_user_table(tmp_path: Path) -> None:
    fields = user_feature_inputs(USERS, tmp_path / "no-model.pt")
    assert [f.name for f in fields] == ["age", "gender", "zip"]
    assert fields[0].kind == "number" and fields[1].options == ("F", "M")
    many = pd.DataFrame(
        {"user_id": range(70), "age": range(70), "zip": [f"Z{i:04d}" for i in range(70)]}
    )
    assert [f.name for f in user_feature_inputs(many, None)] == ["age"], "zip: too many values"


def test_catalog_through_the_ingestion_manifest(
    ui_files: UIFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(ui_files.cache))
    uri = f"faiss:{ui_files.root / 'image'}"
    found = ingested_catalog(uri + "?index=HNSW32&ef=64")
    assert found is not None and found[0].name == "products.csv"
    with open_store(uri) as store:
        catalog = load_catalog("image", store)
    assert catalog.ids[0] == ui_files.image_id and len(catalog.ids) == len(catalog.metadata)
    png = catalog.image(ui_files.image_id)
    assert png is not None and png.startswith(b"\x89PNG")
    category = catalog.metadata[ui_files.image_id]["category"]
    assert catalog.label(ui_files.image_id) == f"{ui_files.image_id} · {category}"
    assert catalog.fields[0].name == "category"
    assert ingested_catalog(f"faiss:{ui_files.root / 'elsewhere'}") is None
    monkeypatch.setenv(CACHE_ENV, str(ui_files.root / "empty-cache"))
    with open_store(uri) as store:
        bare = load_catalog("image", store, known_ids=[ui_files.image_id, "unknown"])
    assert bare.ids == [ui_files.image_id] and not bare.images


def test_results_files(ui_files: UIFiles, tmp_path: Path) -> None:
    bench = find([ui_files.results], "results.json")
    assert len(bench) == 1
    run = BenchRun.load(bench[0])
    assert run.datasets == ["synthetic-1k"] and run.stores == ["faiss-hnsw32", "qdrant-edge"]
    assert {"p50_ms", "recall", "reached"} <= set(run.points.columns)
    board = Leaderboard.load(find([ui_files.results], "leaderboard.json")[0])
    assert board.k == 10 and board.splits == ["stratified 75/25"] and len(board.cold_start) == 2
    (tmp_path / "leaderboard.json").write_text('{"rows": []}')
    with pytest.raises(ResultsError, match=r"not a leaderboard.*no k"):
        Leaderboard.load(tmp_path / "leaderboard.json")
    (tmp_path / "results.json").write_text('{"rows": [{"store": "x"}]}')
    with pytest.raises(ResultsError, match="rows lack"):
        BenchRun.load(tmp_path / "results.json")
    assert find([tmp_path / "missing"], "results.json") == []


def test_user_data_reads_a_train_configs_data_section(tmp_path: Path) -> None:
    """`[users] data = <train config>`: the app sees the users and ratings in canonical
    columns, whatever the config's own column names."""
    pd.DataFrame({"uid": ["7", "8"], "age": [30, 40]}).to_csv(tmp_path / "people.csv", index=False)
    pd.DataFrame({"sku": ["a", "b"]}).to_csv(tmp_path / "items.csv", index=False)
    orders = {"uid": ["7", "7", "8"], "sku": ["a", "b", "b"], "stars": [2, 5, 4]}
    pd.DataFrame(orders).to_csv(tmp_path / "orders.csv", index=False)
    (tmp_path / "train.toml").write_text(
        f'[data.interactions]\npath = "{tmp_path}/orders.csv"\nuser = "uid"\nitem = "sku"\n'
        f'rating = "stars"\n[data.items]\npath = "{tmp_path}/items.csv"\nid = "sku"\n'
        f'[data.users]\npath = "{tmp_path}/people.csv"\nid = "uid"\n'
    )
    users = UserData.from_config(UsersConfig(data=tmp_path / "train.toml"))
    assert users.user_ids == ["7", "8"]
    assert users.top_rated("7", 5).to_dict("list") == {"item_id": ["b", "a"], "rating": [5, 2]}
    assert users.features_of("8") == {"age": "40"}


def test_whole_numbers_in_a_float_column_show_as_ints() -> None:
    """MovieLens ages come back as floats where a column holds a missing value: `age: 24`."""
    people = pd.DataFrame({"user_id": ["1", "2"], "age": [24.0, None], "w": [1.5, 2.0]})
    users = UserData(people, pd.DataFrame())
    assert users.features_of("1") == {"age": 24, "w": 1.5}
    assert isinstance(users.features_of("1")["age"], int)
