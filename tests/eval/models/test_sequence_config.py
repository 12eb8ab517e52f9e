"""The sequence encoder from config alone, on the shop log: `embedrec train`, `evaluate`,
`ingest --embedder two-tower:PATH`, then a service recommending from a history."""

from pathlib import Path

import pytest

from embedrec.cli import main
from embedrec.embedders.two_tower import TwoTowerModel
from embedrec.retrieval.client import Recommender
from tests.data.shop_data import shop_beside_config

CONFIG = Path(__file__).parents[3] / "configs" / "shop_sequence.toml"
QUICK = {"epochs = 30": "epochs = 2", "dim = 64": "dim = 16", "text = true": "text = false"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shop-seq")
    return shop_beside_config(root, CONFIG, users=120, quick=QUICK, name="seq.toml")


@pytest.mark.slow
def test_train_ingest_and_recommend_with_a_history(shop, monkeypatch) -> None:
    monkeypatch.chdir(shop)
    assert main(["train", "seq.toml", "--out", "models/seq.pt", "--quiet"]) == 0
    model = TwoTowerModel.load("models/seq.pt")
    assert model.config.user_encoder == "sequence" and model.config.time_buckets == 16
    assert model.config.staleness_buckets == 24 and model.config.popularity_days == 60
    store = "faiss:./store?metric=dot"
    ingest = ["ingest", "--source", "data/shop/products.csv", "--id-col", "sku", "--text",
              "{name}", "--metadata", "name,categories,price:float", "--quiet",
              "--embedder", "two-tower:models/seq.pt", "--store", store]  # fmt: skip
    assert main(ingest) == 0
    Path("serve.toml").write_text(
        '[two_tower]\nuri = "faiss:./store"\n\n[users]\ndata = "seq.toml"\n'
    )
    rec = Recommender.from_config("serve.toml")
    try:
        history = ["SKU-00050", "SKU-00181", "SKU-NOPE"]
        anonymous = rec.recommend(None, 5, history=history)
        assert anonymous.source == "history" and anonymous.unknown_history == 1
        assert len(anonymous.hits) == 5 and not {"SKU-00050", "SKU-00181"} & set(anonymous.hits.ids)
        known = rec.recommend("C0001", 5, history=history[:2])
        assert known.source == "two-tower" and len(known.hits) == 5
    finally:
        rec.close()


@pytest.mark.slow
def test_evaluate_runs_the_sequence_model_on_both_time_protocols(shop, monkeypatch) -> None:
    monkeypatch.chdir(shop)
    assert main(["evaluate", "seq.toml", "--out", "runs", "--quiet", "--workers", "1"]) == 0
    board = (Path("runs") / "leaderboard.md").read_text()
    assert "leave-last-out" in board and "temporal" in board
    assert "| two-tower sequence |" in board  # its row says which user tower it is
