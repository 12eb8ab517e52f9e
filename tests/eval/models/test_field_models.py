"""The field's models on a planted structure: users fall into groups, each group interacts
with its own block of items, and a few items are popular with everyone. Held-out in-block
interactions are the test; popularity cannot tell the blocks apart, a collaborative model
must."""

import importlib

import numpy as np
import pandas as pd
import pytest

from embedrec.eval.models.baselines import Catalog, MostPopular
from embedrec.eval.models.field_models import EASE, CornacBiVAE, CornacBPR, ImplicitALS
from embedrec.eval.models.leaderboard import score_model
from embedrec.eval.models.params import ALSParams, BiVAEParams, CornacBPRParams, EaseParams

GROUPS, USERS_PER_GROUP, ITEMS_PER_GROUP, POPULAR = 4, 30, 25, 5


def planted(seed: int = 0) -> tuple[Catalog, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(GROUPS):
        block = np.arange(g * ITEMS_PER_GROUP, (g + 1) * ITEMS_PER_GROUP)
        for u in range(USERS_PER_GROUP):
            user = f"u{g * USERS_PER_GROUP + u}"
            liked = rng.choice(block, size=12, replace=False)
            popular = GROUPS * ITEMS_PER_GROUP + rng.choice(POPULAR, size=4, replace=False)
            rows += [(user, f"i{i}", True) for i in liked[:8]]
            rows += [(user, f"i{i}", False) for i in liked[8:]]
            rows += [(user, f"i{i}", True) for i in popular]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "train"])
    train = frame[frame["train"]].drop(columns="train").assign(rating=1.0)
    test = frame[~frame["train"]].drop(columns="train")
    users = pd.DataFrame({"user_id": sorted(frame["user_id"].unique(), key=lambda s: int(s[1:]))})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(GROUPS * ITEMS_PER_GROUP + POPULAR)]})
    return Catalog(users, items, train), test


@pytest.fixture(scope="module")
def data() -> tuple[Catalog, pd.DataFrame]:
    return planted()


def ndcg(model, catalog: Catalog, test: pd.DataFrame) -> float:
    model.fit(catalog)
    return score_model(model, catalog, test, 10)["ndcg@10"]


@pytest.mark.parametrize(
    "model",
    [
        EASE(EaseParams(l2=10.0)),
        ImplicitALS(ALSParams(factors=8, regularization=0.01, alpha=10.0, iterations=10)),
        CornacBPR(CornacBPRParams(k=8, max_iter=100, learning_rate=0.05)),
        CornacBiVAE(
            BiVAEParams(
                k=8, encoder_structure=[16], n_epochs=100, batch_size=64, learning_rate=0.01
            )
        ),
    ],
    ids=lambda m: m.name,
)
def test_recovers_the_planted_blocks_that_popularity_cannot(data, model) -> None:
    catalog, test = data
    popular = ndcg(MostPopular(), catalog, test)
    ours = ndcg(model, catalog, test)
    # popularity ranks every block alike; knowing the blocks (4 of a user's 17 unseen block
    # items are relevant) gives about 0.33, the most any model can get from this structure
    assert popular < 0.1
    assert ours > 0.25, (model.name, ours, popular)


def test_ease_weights_solve_the_constrained_ridge_problem(data) -> None:
    """Column j of B is the ridge regression of item j on every other item (diag(B) = 0)."""
    catalog, _ = data
    model = EASE(EaseParams(l2=7.0))
    model.fit(catalog)
    x = catalog.interactions(catalog.items).astype(np.float64)
    for j in (0, 31, 101):
        others = np.delete(np.arange(x.shape[1]), j)
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + 7.0 * np.eye(len(others)), a.T @ x[:, j])
        assert model.weights[j, j] == 0
        np.testing.assert_allclose(model.weights[others, j], direct, atol=1e-4)


def test_cornac_leaves_untrained_items_unranked_and_unknown_users_finite(data) -> None:
    catalog, _ = data
    users = pd.concat([catalog.users, pd.DataFrame({"user_id": ["stranger"]})])
    items = pd.concat([catalog.items, pd.DataFrame({"item_id": ["unsold"]})])
    wider = Catalog(users, items, catalog.train)
    model = CornacBPR(CornacBPRParams(k=4, max_iter=2))
    model.fit(wider)
    scores = model.scores(np.arange(len(wider.users)))
    assert np.isneginf(scores[:, -1]).all()
    assert np.isfinite(scores[:, :-1]).all()
    assert (scores[-1, :-1] == 0).all()


@pytest.mark.parametrize(
    ("build", "module"),
    [
        (lambda: CornacBPR(CornacBPRParams()), "cornac"),
        (lambda: CornacBiVAE(BiVAEParams()), "cornac"),
        (lambda: ImplicitALS(ALSParams()), "implicit.cpu.als"),
    ],
)
def test_missing_extra_is_named_before_any_training(monkeypatch, build, module) -> None:
    real = importlib.import_module

    def fake(name: str, *args):
        if name == module:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ValueError, match=r"optional extra 'recsys'.*embedrec\[recsys\]"):
        build()


PUBLISHED = {
    "by": "a paper", "source": "A paper, table 2", "split": "stratified",
    "models": {"BPR": {"ndcg@10": 0.4, "map": 0.1}, "SAR": {"ndcg@10": 0.3}},
}  # fmt: skip


def test_leaderboard_runs_the_field_beside_the_published_rows(data, tmp_path) -> None:
    from types import SimpleNamespace

    from embedrec.eval.models.config import ExperimentConfig
    from embedrec.eval.models.leaderboard import evaluate, write

    catalog, test = data
    ratings = pd.concat([catalog.train, test.assign(rating=1.0)], ignore_index=True)
    tables = SimpleNamespace(users=catalog.users, items=catalog.items, ratings=ratings)
    config = ExperimentConfig.model_validate(
        {
            "data": {
                "interactions": {"path": "i.csv"},
                "items": {"path": "c.csv", "id": "item_id"},
            },
            "baselines": {
                "ease": {"l2": 10.0},
                "als": {"factors": 8, "alpha": 10.0},
                "cornac_bpr": {"k": 8, "max_iter": 20},
                "bivae": {"k": 8, "encoder_structure": [16], "n_epochs": 5},
            },
            "eval": {
                "splits": ["stratified"], "stores": [], "cold_fraction": 0.0,
                "models": ["most-popular", "ease", "als", "cornac-bpr", "cornac-bivae"],
            },
            "published": [PUBLISHED],
        }
    )  # fmt: skip
    board = evaluate(config, data=tables, text_fn=lambda texts: None, progress=False)
    ours = {r["model"]: r for r in board["rows"] if r["source"] == "embedrec"}
    assert set(ours) == {
        "most popular", "EASE", "ALS (implicit)",
        "BPR (Cornac, Recommenders' settings)", "BiVAE (Cornac, Recommenders' settings)",
    }  # fmt: skip
    assert ours["EASE"]["ndcg@10"] > ours["most popular"]["ndcg@10"]
    published = [r for r in board["rows"] if r["source"] != "embedrec"]
    assert {r["model"] for r in published} == {"BPR (a paper)", "SAR (a paper)"}
    assert {r["scoring"] for r in published} == {"published"}
    assert {r["split"] for r in board["rows"]} == {"stratified by item 75/25 (seed 42)"}
    _, md = write(board, tmp_path)
    text = md.read_text()
    assert "| BPR (a paper) ¹ | published | 0.4000 |" in text
    assert "¹ Published: their numbers, not rerun here: A paper, table 2." in text
    assert "Cornac rows: rerun here with Recommenders' settings" in text
    assert "bpr_params" in text and "not tuned on validation" in text


@pytest.mark.parametrize(
    ("published", "splits", "k", "shown"),
    [
        ([], ["stratified"], 10, False),  # a dataset without published figures gets none
        ([PUBLISHED], ["random"], 10, False),  # not the split they were measured on
        ([PUBLISHED], ["stratified"], 5, False),  # not their cut-off
        ([PUBLISHED], ["random", "stratified"], 10, True),
    ],
)
def test_published_rows_only_where_declared_for_the_split_and_k(
    data, published, splits, k, shown
) -> None:
    from types import SimpleNamespace

    from embedrec.eval.models.config import ExperimentConfig
    from embedrec.eval.models.leaderboard import evaluate

    catalog, test = data
    ratings = pd.concat([catalog.train, test.assign(rating=1.0)], ignore_index=True)
    tables = SimpleNamespace(users=catalog.users, items=catalog.items, ratings=ratings)
    config = ExperimentConfig.model_validate(
        {
            "data": {"interactions": {"path": "i.csv"},
                     "items": {"path": "c.csv", "id": "item_id"}},
            "eval": {"splits": splits, "k": k, "stores": [], "cold_fraction": 0.0,
                     "models": ["most-popular"]},
            "published": published,
        }
    )  # fmt: skip
    board = evaluate(config, data=tables, text_fn=lambda texts: None, progress=False)
    rows = [r for r in board["rows"] if r["scoring"] == "published"]
    assert bool(rows) is shown
    assert all(r["split"] == "stratified by item 75/25 (seed 42)" for r in rows)


def test_published_figures_name_a_known_split() -> None:
    from embedrec.eval.models.config import Published

    with pytest.raises(ValueError, match="unknown split 'by-item'"):
        Published.model_validate({**PUBLISHED, "split": "by-item"})
