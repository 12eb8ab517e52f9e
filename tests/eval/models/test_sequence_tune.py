"""`embedrec tune` on the sequence two-tower: its own search space (history, blocks, heads,
dropout, time and recency inputs, rate, epochs), chosen per protocol on that protocol's
validation, never reading a test part; the static two-tower keeps its own space."""

import optuna
import pytest

import embedrec.eval.models.leaderboard as leaderboard
import embedrec.eval.models.tune as tuning
from embedrec.eval.models.config import ExperimentConfig
from embedrec.eval.models.leaderboard import evaluate, to_markdown
from embedrec.eval.models.search_space import current_params, space_of, space_paths, two_tower
from embedrec.ranking.splits import validation_split
from tests.eval.models.test_protocols import SPLITS, pairs, recorded_tune, walks

SEQUENCE_KEYS = {
    "history", "layers", "heads", "dropout", "time_buckets", "staleness_buckets", "prior",
    "recency_days", "popularity_days",
}  # fmt: skip
SMALL = {"user_encoder": "sequence", "dim": 8, "hidden": 8, "features": False, "history": 10,
         "layers": 1, "heads": 2, "epochs": 10, "threads": 1}  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return walks(users=40, items=20, length=10)


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "data": {"interactions": {"path": "x.csv"}, "items": {"path": "i.csv", "id": "x"}},
            "eval": {"splits": SPLITS, "models": ["two-tower"], "stores": [], "cold_fraction": 0},
            "two_tower": SMALL,
        }
    )


@pytest.fixture(scope="module")
def run(data, config) -> dict:
    """Two trials a split, recording what each trial fitted on and was scored against."""
    return recorded_tune(config, data, 2)


def test_the_sequence_encoder_searches_its_own_keys(config) -> None:
    values = config.model_dump()
    assert space_of("two-tower", values) is not two_tower
    static = {**values, "two_tower": {**values["two_tower"], "user_encoder": "static"}}
    assert space_of("two-tower", static) is two_tower
    assert set(current_params("two-tower", values)) >= SEQUENCE_KEYS
    assert not SEQUENCE_KEYS & set(current_params("two-tower", static))
    paths = {p[-1] for p in space_paths("two-tower")}
    assert SEQUENCE_KEYS | {"hidden", "dim"} <= paths  # either encoder's values are kept
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):  # every patch validates through the config
        patch = space_of("two-tower", values)(study.ask())
        cfg = tuning.apply(config, patch).two_tower
        assert cfg.val_fraction == 0.0 and cfg.dim % cfg.heads == 0


def test_each_split_tunes_the_sequence_keys_on_its_own_validation(run, data, config) -> None:
    record = run["tuned"].tuned
    assert list(record.splits) == SPLITS
    for n, split in enumerate(SPLITS):
        chosen = record.splits[split].values["two_tower"]
        assert set(chosen) >= SEQUENCE_KEYS and chosen["val_fraction"] == 0.0
        assert chosen["history"] in (10, 20, 50, 100) and 1 <= chosen["layers"] <= 3
        train, test = leaderboard.split_ratings(split, data.ratings, config)
        fit, validation = validation_split(split, train)
        for fitted, scored in run["seen"][2 * n : 2 * n + 2]:
            assert fitted == pairs(fit) and scored == pairs(validation)
            assert not (fitted | scored) & pairs(test)
    assert record.splits[SPLITS[0]].trials_by_model == {"two-tower": 2}


def test_the_leaderboard_lists_the_sequence_values_each_split_used(run, data) -> None:
    tuned = run["tuned"]
    board = evaluate(tuned, data=data, text_fn=lambda texts: None, progress=False)
    text = to_markdown(board)
    for split in SPLITS:
        name = leaderboard._split_name(split, tuned)
        row = next(r for r in board["rows"] if r["split"] == name)
        assert row["model"] == "two-tower sequence"
        assert set(row["values"]) >= SEQUENCE_KEYS
        assert row["values_from"] == "tuned on this split's validation"
    assert "- two-tower sequence (tuned on this split's validation): " in text
