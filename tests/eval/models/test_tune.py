"""`embedrec tune` on the planted-block interactions of test_field_models: values within the
search space, a config that reads back, one progress line per trial, and the test split
never seen by a model or by the objective."""

import io
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import embedrec.eval.models.leaderboard as leaderboard
import embedrec.eval.models.tune as tuning
from embedrec.eval.models.baselines import Model
from embedrec.eval.models.config import ExperimentConfig, load_experiment_config
from embedrec.eval.models.search_space import SPACES, current_params
from embedrec.eval.models.toml_write import dumps
from embedrec.eval.models.tune import default_out, save, tune
from tests.eval.models.test_field_models import planted

pytest.importorskip("optuna", reason="tune needs the optional extra 'recsys'")

DATA = {  # absolute: a relative table path would be taken from each written config's folder
    "interactions": {"path": "/data/interactions.csv"},
    "items": {"path": "/data/items.csv", "id": "item_id"},
}
TRIALS = 4


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    catalog, test = planted(seed=1)
    ratings = pd.concat([catalog.train, test.assign(rating=1.0)], ignore_index=True)
    return SimpleNamespace(users=catalog.users, items=catalog.items, ratings=ratings)


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"data": DATA, "eval": {"splits": ["random"], "models": ["most-popular", "ease", "als"]}}
    )


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"], frame["item_id"], strict=True))


@pytest.fixture(scope="module")
def run(data, config) -> dict:
    """One tune of EASE and ALS, recording what every fit and every score saw."""
    seen: dict[str, list] = {"fit": [], "scored": []}
    mp = pytest.MonkeyPatch()
    real_score, real_fit = leaderboard.score_model, Model.fit

    def score(model, catalog, test, k, *args, **kwargs):
        seen["scored"].append((pairs(catalog.train), pairs(test)))
        return real_score(model, catalog, test, k, *args, **kwargs)

    models = [leaderboard.MODELS[key](config, lambda t: None, False) for key in config.eval.models]
    for cls in {type(m) for m in models}:
        fit = cls.fit

        def record(self, catalog, _fit=fit):
            seen["fit"].append(pairs(catalog.train))
            return _fit(self, catalog)

        mp.setattr(cls, "fit", record)
    mp.setattr(tuning, "score_model", score)
    stream = io.StringIO()
    try:
        tuned = tune(config, "planted.toml", TRIALS, data=data, stream=stream)
    finally:
        mp.undo()
    assert Model.fit is real_fit
    return {"tuned": tuned, "seen": seen, "log": stream.getvalue()}


def test_objective_sees_only_training_data(run, data, config) -> None:
    train, test = leaderboard.split_ratings("random", data.ratings, config)
    train_pairs, test_pairs = pairs(train), pairs(test)
    seen = run["seen"]
    assert len(seen["scored"]) == 2 * TRIALS and len(seen["fit"]) == 2 * TRIALS
    for fitted in seen["fit"]:
        assert fitted and fitted <= train_pairs and not fitted & test_pairs
    for fitted, validation in seen["scored"]:
        assert validation <= train_pairs and not validation & test_pairs
        assert not fitted & validation  # validation is held out of the fit


def test_chosen_values_lie_in_the_search_space_and_are_recorded(run) -> None:
    tuned = run["tuned"].for_split("random")
    assert 1.0 <= tuned.baselines.ease.l2 <= 1e4
    als = tuned.baselines.als
    assert als.factors in (16, 32, 64, 128, 256)
    assert 1e-3 <= als.regularization <= 10 and 0.1 <= als.alpha <= 100
    assert 5 <= als.iterations <= 50
    record = run["tuned"].tuned
    assert record.config == "planted.toml" and record.trials == TRIALS
    assert set(record.splits) == {"random"} and record.metric == "ndcg@10"
    split = record.splits["random"]
    assert set(split.best) == {"ease", "als"}
    assert "random 75/25 (seed 42)" in split.on and "never read" in split.on
    assert all(0 < v <= 1 for v in split.best.values())
    # the config's own tables are left as they were; the values live with the split
    assert run["tuned"].baselines == ExperimentConfig.model_validate({"data": DATA}).baselines
    assert split.values["baselines"]["als"]["factors"] == als.factors


def test_first_trial_is_the_config_itself_and_tuning_does_not_lose_to_it(run, config) -> None:
    assert current_params("ease", config.model_dump()) == {"l2": 500.0}
    # the BPR space fixes val_fraction (it searches epochs); only searched values are tried
    assert current_params("bpr", config.model_dump()) == {
        "optimizer": "adam", "item_bias": False, "reject_positives": False,
        "dim": 64, "lr": 3e-3, "l2": 1e-4, "epochs": 60,
    }  # fmt: skip
    lines = run["log"].splitlines()
    first = next(line for line in lines if line.startswith("tune ease: 1/"))
    assert "l2=500" in first
    scores = [float(line.split(" value=")[1].split()[0]) for line in lines if "tune ease" in line]
    best = run["tuned"].tuned.splits["random"].best["ease"]
    assert best == pytest.approx(max(scores), abs=1e-4)


def test_one_progress_line_per_trial_when_not_a_terminal(run) -> None:
    lines = run["log"].splitlines()
    assert len(lines) == 2 * TRIALS
    assert [line.split(":")[0] for line in lines] == ["tune ease"] * TRIALS + ["tune als"] * TRIALS
    assert lines[-1].startswith(f"tune als: {TRIALS}/{TRIALS} trials, ")


def absolute(config: ExperimentConfig) -> ExperimentConfig:
    """`config` with its model path made absolute (a config read from a file has it so)."""
    return config.model_copy(update={"model_path": config.model_path.absolute()})


def test_saved_config_reads_back_with_the_tuned_values(run, tmp_path) -> None:
    path = save(run["tuned"], tmp_path / "sub" / "planted.tuned.toml")
    loaded = load_experiment_config(path)
    assert loaded == absolute(run["tuned"])
    # written relative to its own folder, so a tuned config can move with its models
    assert not Path(tomllib.loads(path.read_text())["model_path"]).is_absolute()
    assert tomllib.loads(path.read_text())["tuned"]["trials"] == TRIALS
    assert default_out(Path("configs/x.toml")) == Path("configs/x.tuned.toml")


def test_saved_data_paths_are_relative_to_the_written_config(run, tmp_path) -> None:
    """A config read from configs/ has its data files made absolute; written, they are
    relative again, so the tuned config does not name the checkout it was tuned in."""
    src = tmp_path / "configs" / "planted.toml"
    src.parent.mkdir()
    data = {
        "interactions": {"path": "../data/i.csv"},
        "items": {"path": "../data/t.csv", "id": "item_id"},
    }
    src.write_text(dumps({**run["tuned"].model_dump(mode="json", exclude_none=True), "data": data}))
    config = load_experiment_config(src)
    assert config.data.items.path == tmp_path / "data" / "t.csv"
    written = tomllib.loads(save(config, src.with_name("planted.tuned.toml")).read_text())
    assert written["data"]["interactions"]["path"] == "../data/i.csv"
    assert written["data"]["items"]["path"] == "../data/t.csv"


def test_unknown_model_or_no_trials_is_refused(data, config) -> None:
    with pytest.raises(ValueError, match="no search space for 'cornac-bpr'"):
        tune(config, "c", 1, data=data, models=["cornac-bpr"])
    with pytest.raises(ValueError, match="--trials must be >= 1"):
        tune(config, "c", 0, data=data)


def test_toml_writer_round_trips_nested_tables_and_lists_of_tables() -> None:
    doc = {
        "top": 'a "quoted" \\ value',
        "data": {"items": {"id": "sku", "features": [{"kind": "text", "template": "{name}"}]}},
        "eval": {"k": 10, "ratio": 0.75, "splits": ["random"], "flag": False},
        "empty": {},
    }
    assert tomllib.loads(dumps(doc)) == doc


def test_cli_tune_writes_the_config(data, config, tmp_path, monkeypatch) -> None:
    from embedrec.cli import main

    monkeypatch.setattr(tuning, "load_data", lambda _config: data)
    src = tmp_path / "planted.toml"
    src.write_text(dumps(config.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "out"
    assert main(["tune", str(src), "--trials", "2", "--models", "ease", "--out", str(out)]) == 0
    tuned = load_experiment_config(out / "planted.tuned.toml")
    assert tuned.tuned.trials == 2 and set(tuned.tuned.splits["random"].best) == {"ease"}
    # not searched, left as it was
    assert tuned.for_split("random").baselines.als == config.baselines.als


def test_leaderboard_of_the_tuned_config_says_what_was_tuned(run, data, tmp_path) -> None:
    from embedrec.eval.models.leaderboard import evaluate, write

    tuned = run["tuned"].model_copy(
        update={"eval": run["tuned"].eval.model_copy(update={"stores": [], "cold_fraction": 0.0})}
    )
    board = evaluate(tuned, data=data, text_fn=lambda texts: None, progress=False)
    assert board["tuned"]["trials"] == TRIALS
    text = write(board, tmp_path)[1].read_text()
    assert f"tuned by `embedrec tune planted.toml --trials {TRIALS}`" in text
    assert "applied to the training part" in text
    assert "- EASE (tuned on this split's validation): l2=" in text
    assert "- most popular" not in text  # nothing to search, no values line
    assert "The test split is reported once, here." in text


def test_tuning_a_tuned_config_again_keeps_what_it_did_not_search(run, data) -> None:
    from embedrec.eval.models.leaderboard import _tuning_note

    first = run["tuned"]
    assert first.tuned.splits["random"].trials_by_model == {"ease": TRIALS, "als": TRIALS}
    again = tune(first, "planted.tuned.toml", 1, data=data, models=["ease"], stream=io.StringIO())
    record = again.tuned
    assert record.config == "planted.toml" and record.trials == 1
    split, before = record.splits["random"], first.tuned.splits["random"]
    assert split.trials_by_model == {"ease": 1, "als": TRIALS}
    assert split.best["als"] == before.best["als"] and set(split.best) == {"ease", "als"}
    assert again.for_split("random").baselines.als == first.for_split("random").baselines.als
    note = "\n".join(_tuning_note(record.model_dump(), again.eval.model_dump()))
    assert f"`embedrec tune` from planted.toml (trials: ease 1, als {TRIALS}," in note


def test_runs_in_parallel_merge_into_what_one_after_the_other_writes(
    run, data, config, tmp_path, capsys
) -> None:
    from embedrec.cli import main
    from embedrec.eval.models.tune import combine

    first = run["tuned"]  # ease and als, from `config`
    other = tune(config, "planted.toml", 1, data=data, models=["bpr"], stream=io.StringIO())
    merged = combine(first, other, "other.toml")

    def on(cfg):  # the values a split runs with
        return cfg.for_split("random")

    def rec(cfg):
        return cfg.tuned.splits["random"]

    assert on(merged).bpr == on(other).bpr and on(merged).baselines == on(first).baselines
    assert on(merged).two_tower == config.two_tower
    assert rec(merged).trials_by_model == {"ease": TRIALS, "als": TRIALS, "bpr": 1}
    assert rec(merged).best == {**rec(first).best, **rec(other).best}
    # the same as tuning bpr on the tuned config
    chained = tune(first, "planted.toml", 1, data=data, models=["bpr"], stream=io.StringIO())
    assert on(chained).bpr == on(merged).bpr and rec(chained).best == rec(merged).best
    # a model both runs tuned keeps the better validation score; the trials add up
    ease_again = tune(config, "planted.toml", 1, data=data, models=["ease"], stream=io.StringIO())
    both = combine(merged, ease_again, "ease.toml")
    better = max(rec(ease_again).best["ease"], rec(first).best["ease"])
    assert rec(both).best["ease"] == better and rec(both).trials_by_model["ease"] == TRIALS + 1
    winner = ease_again if rec(ease_again).best["ease"] > rec(first).best["ease"] else first
    assert on(both).baselines.ease == on(winner).baselines.ease
    with pytest.raises(ValueError, match=r"plain\.toml: no \[tuned\] table"):
        combine(first, config, "plain.toml")
    # the command line: merge only, no search
    src, a, b = tmp_path / "planted.toml", tmp_path / "a.toml", tmp_path / "b.toml"
    src.write_text(dumps(config.model_dump(mode="json", exclude_none=True)))
    save(first, a), save(other, b)
    out = tmp_path / "merged.toml"
    assert main(["tune", str(src), "--merge", str(a), "--merge", str(b), "--out", str(out)]) == 0
    # src (in tmp_path) names models/ in its own folder
    from_src = merged.model_copy(update={"model_path": tmp_path / config.model_path})
    assert load_experiment_config(out).model_dump() == from_src.model_dump()
    assert main(["tune", str(src)]) != 0
    assert "give --trials N" in capsys.readouterr().err


def test_bpr_search_fixes_epochs_instead_of_early_stopping(data, config) -> None:
    tuned = tune(config, "c", 2, data=data, models=["bpr"], stream=io.StringIO())
    tuned = tuned.for_split("random")
    bpr = tuned.bpr
    assert bpr.val_fraction == 0.0 and 20 <= bpr.epochs <= 200 and bpr.epochs % 20 == 0
    assert bpr.dim in (32, 64, 128, 200) and 5e-4 <= bpr.lr <= 5e-2 and 1e-5 <= bpr.l2 <= 1e-1
    assert tuned.baselines == config.baselines and tuned.two_tower == config.two_tower


@pytest.mark.parametrize("key", sorted(SPACES))
def test_every_search_space_names_real_config_fields(config, key) -> None:
    import optuna

    from embedrec.eval.models.tune import apply

    def within(dump: dict, patch: dict) -> bool:
        return all(
            within(dump[k], v) if isinstance(v, dict) else dump[k] == v for k, v in patch.items()
        )

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):  # a patch naming an unknown field or an invalid value raises here
        patch = SPACES[key](study.ask())
        assert within(apply(config, patch).model_dump(), patch)
    assert set(current_params(key, config.model_dump())) <= set(study.trials[0].params)
