"""`embedrec tune` on Cornac's SASRec, BERT4Rec and GRU4Rec: each searched on the protocol's
own validation (leave-last-out: each user's second-to-last interaction), the values landing
in Cornac's constructors, and no fit or score ever reading the test part."""

import pytest

import embedrec.eval.models.leaderboard as leaderboard
from embedrec.eval.models.config import ExperimentConfig
from embedrec.ranking.splits import validation_split
from tests.eval.models.test_protocols import pairs, recorded_tune, walks

pytest.importorskip("cornac", reason="needs the optional extra 'recsys'")
pytest.importorskip("optuna", reason="tune needs the optional extra 'recsys'")

MODELS = ["cornac-sasrec", "cornac-bert4rec", "cornac-gru4rec"]
SPLITS = ["leave-last-out", "temporal"]
TRIALS = 2
SMALL = {"n_epochs": 2, "max_len": 8, "n_sample": 0, "batch_size": 32}
GRU = {"n_epochs": 5, "n_sample": 0}  # Cornac's batch of 512: wider than these 30 sessions


@pytest.fixture(scope="module")
def data():
    return walks(users=30, items=15, length=8)


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "data": {"interactions": {"path": "x.csv"}, "items": {"path": "i.csv", "id": "x"}},
            "eval": {"splits": SPLITS, "models": MODELS, "stores": [], "cold_fraction": 0.0},
            "baselines": {"sasrec": SMALL, "bert4rec": SMALL, "gru4rec": GRU},
        }
    )


@pytest.fixture(scope="module")
def run(data, config) -> dict:
    """One tune of the three models on both splits, recording what every Cornac fit and
    every score saw."""
    from embedrec.eval.models.sequential.cornac_models import CornacSequential

    return recorded_tune(config, data, TRIALS, (CornacSequential,))


@pytest.mark.slow  # 12 Cornac fits: about 20 s on a busy 2-core machine
def test_the_cornac_models_are_tuned_on_validation_and_never_read_the_test_part(
    run, data, config
) -> None:
    per_split = len(MODELS) * TRIALS
    assert len(run["fits"]) == len(run["seen"]) == len(SPLITS) * per_split
    for n, split in enumerate(SPLITS):
        train, test = leaderboard.split_ratings(split, data.ratings, config)
        fit, validation = validation_split(split, train)
        assert pairs(test) and not pairs(validation) & pairs(test)
        for seen in run["fits"][n * per_split : (n + 1) * per_split]:
            assert seen == pairs(fit)
        for fitted, on in run["seen"][n * per_split : (n + 1) * per_split]:
            assert fitted == pairs(fit) and on == pairs(validation)
    record = run["tuned"].tuned
    for split in SPLITS:
        assert record.splits[split].trials_by_model == dict.fromkeys(MODELS, TRIALS)
        assert set(record.splits[split].best) == set(MODELS)


@pytest.mark.slow
def test_the_chosen_values_lie_in_the_spaces_and_reach_the_models(run) -> None:
    from embedrec.eval.models.sequential.cornac_models import CornacSequential

    for split in SPLITS:
        baselines = run["tuned"].for_split(split).baselines
        for table in (baselines.sasrec, baselines.bert4rec):
            assert 1 <= table.n_epochs <= 6 and 1e-4 <= table.learning_rate <= 3e-3
            assert 0.1 <= table.dropout <= 0.5 and table.embedding_dim in (50, 64, 100)
            assert table.max_len == 8  # not searched: the config's
        gru = baselines.gru4rec
        assert 1 <= gru.n_epochs <= 10 and 32 <= gru.batch_size <= 512 and gru.layers == [100]
        assert 0.01 <= gru.learning_rate <= 0.25 and 0 <= gru.momentum <= 0.9
        assert 0 <= gru.dropout_p_embed <= 0.5 and 0 <= gru.dropout_p_hidden <= 0.7
        for key, params in [("sasrec", baselines.sasrec), ("gru4rec", gru)]:
            built = CornacSequential(key, params)._build()  # Cornac's own constructor
            assert all(getattr(built, name) == value for name, value in params)
