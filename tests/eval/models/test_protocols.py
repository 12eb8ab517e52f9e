"""Each protocol tuned on its own validation: `embedrec tune` on a config with the
leave-last-out and the temporal split chooses values per split, on validation carved from
that split's training part by the same protocol, never reading a test part; the leaderboard
runs each split with its own values and says which, and how many users each split tests."""

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import embedrec.eval.models.leaderboard as leaderboard
import embedrec.eval.models.tune as tuning
from embedrec.eval.models.baselines import Model
from embedrec.eval.models.config import ExperimentConfig
from embedrec.eval.models.leaderboard import evaluate, to_markdown
from embedrec.ranking.splits import validation_split

pytest.importorskip("optuna", reason="tune needs the optional extra 'recsys'")

SPLITS = ["leave-last-out", "temporal"]
TRIALS = 3


def walks(users: int = 60, items: int = 30, length: int = 12, seed: int = 0) -> SimpleNamespace:
    """Users step through a cycle of items (with a random skip now and then) at times spread
    over one shared timeline, so both the per-user and the global time cut apply."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        item = int(rng.integers(items))
        times = np.sort(rng.integers(0, 10_000_000, size=length))
        for t in times:
            rows.append((f"u{u}", f"i{item}", int(t)))
            item = (item + (1 if rng.random() < 0.8 else int(rng.integers(items)))) % items
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return SimpleNamespace(
        ratings=ratings,
        users=pd.DataFrame({"user_id": [f"u{u}" for u in range(users)]}),
        items=pd.DataFrame({"item_id": [f"i{i}" for i in range(items)]}),
    )


def pairs(frame: pd.DataFrame) -> set[tuple[str, str, int]]:
    return set(zip(frame["user_id"], frame["item_id"], frame["timestamp"], strict=True))


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    return walks()


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    models = ["most-popular", "transitions", "recent-popularity"]
    return ExperimentConfig.model_validate(
        {
            "data": {"interactions": {"path": "x.csv"}, "items": {"path": "i.csv", "id": "x"}},
            "eval": {"splits": SPLITS, "models": models, "stores": [], "cold_fraction": 0.0},
        }
    )


def recorded_tune(config: ExperimentConfig, data, trials: int, fitted: tuple = ()) -> dict:
    """A tune of `config` on `data`, recording the (train, scored) part of every score and
    the train part of every fit of the model classes `fitted`."""
    seen: list[tuple[set, set]] = []
    fits: list[set] = []
    mp = pytest.MonkeyPatch()
    real_score = leaderboard.score_model

    def score(model, catalog, test, k, *args, **kwargs):
        seen.append((pairs(catalog.train), pairs(test)))
        return real_score(model, catalog, test, k, *args, **kwargs)

    for cls in fitted:

        def record(self, catalog, _fit=cls.fit):
            fits.append(pairs(catalog.train))
            return _fit(self, catalog)

        mp.setattr(cls, "fit", record)
    mp.setattr(tuning, "score_model", score)
    try:
        tuned = tuning.tune(config, "walks.toml", trials, data=data, stream=io.StringIO())
    finally:
        mp.undo()
    return {"tuned": tuned, "seen": seen, "fits": fits}


@pytest.fixture(scope="module")
def run(data, config) -> dict:
    """One tune of both session baselines on both splits."""
    keys = ("transitions", "recent-popularity")
    classes = tuple(type(leaderboard.MODELS[key](config, None, False)) for key in keys)
    return recorded_tune(config, data, TRIALS, classes)


def test_each_split_is_tuned_on_its_own_validation(run, data, config) -> None:
    record = run["tuned"].tuned
    assert list(record.splits) == SPLITS
    assert "second-to-last" in record.splits["leave-last-out"].on
    assert "last tenth of the training part's time" in record.splits["temporal"].on
    for split in SPLITS:
        assert set(record.splits[split].best) == {"transitions", "recent-popularity"}
    # the studies ran split by split: TRIALS per model, two models per split
    per_split = 2 * TRIALS
    for n, split in enumerate(SPLITS):
        train, test = leaderboard.split_ratings(split, data.ratings, config)
        fit, validation = validation_split(split, train)
        for fitted, scored in run["seen"][n * per_split : (n + 1) * per_split]:
            assert fitted == pairs(fit) and scored == pairs(validation)
            assert not scored & pairs(test) and not fitted & pairs(test)
    assert len(run["fits"]) == len(SPLITS) * per_split
    assert all(not f & pairs(leaderboard.split_ratings(s, data.ratings, config)[1])
               for f, s in zip(run["fits"], np.repeat(SPLITS, per_split), strict=True))  # fmt: skip


def test_tuning_never_reads_a_test_split(data, config, monkeypatch) -> None:
    """Every frame a model is fitted on or scored against while tuning a split lies outside
    that split's test part (splits are tuned in turn, one trial each here)."""
    tests = [pairs(leaderboard.split_ratings(s, data.ratings, config)[1]) for s in SPLITS]
    touched: list[set] = []
    real_fit = Model.fit

    def score(model, catalog, test, k, *args, **kwargs):
        touched.extend([pairs(catalog.train), pairs(test)])
        return {f"ndcg@{k}": 0.0}

    monkeypatch.setattr(tuning, "score_model", score)
    tuning.tune(config, "w", 1, data=data, models=["transitions"], stream=io.StringIO())
    assert Model.fit is real_fit and len(touched) == 2 * len(SPLITS)
    for n, test in enumerate(tests):
        assert all(not frame & test for frame in touched[2 * n : 2 * n + 2])


def test_the_leaderboard_runs_each_split_with_its_values(run, data) -> None:
    tuned = run["tuned"]
    board = evaluate(tuned, data=data, text_fn=lambda texts: None, progress=False)
    for split in SPLITS:
        chosen = tuned.tuned.splits[split].values["baselines"]["transitions"]
        name = leaderboard._split_name(split, tuned)
        row = next(
            r for r in board["rows"] if r["split"] == name and r["model"] == "last-item transitions"
        )
        assert row["values"] == chosen and row["values_from"] == "tuned on this split's validation"
        popular = next(
            r for r in board["rows"] if r["split"] == name and r["model"] == "most popular"
        )
        assert "values" not in popular
    text = to_markdown(board)
    users = {r["split"]: r["users"] for r in board["rows"]}
    for split, n in users.items():
        assert f"## {split} ({n} test users)" in text
    assert users[leaderboard._split_name("leave-last-out", tuned)] == 60
    assert "Hyperparameters on leave-last-out per user: tuned by" in text
    assert "- last-item transitions (tuned on this split's validation): history=" in text


def test_a_config_names_only_known_splits_and_valid_values(config) -> None:
    bad = config.model_dump()
    values = {"baselines": {"transitions": {"history": 0}}}
    split = {"on": "v", "best": {}, "values": values}
    bad["tuned"] = {"config": "c", "metric": "ndcg@10", "trials": 1, "sampler": "s",
                    "splits": {"leave-last-out": split}}  # fmt: skip
    with pytest.raises(ValueError, match=r"tuned\.splits\.leave-last-out\] values"):
        ExperimentConfig.model_validate(bad)
    bad["tuned"]["splits"] = {"sideways": {"on": "v", "best": {}}}
    with pytest.raises(ValueError, match="unknown split 'sideways'"):
        ExperimentConfig.model_validate(bad)
