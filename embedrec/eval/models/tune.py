"""`embedrec tune`: hyperparameters chosen on validation only.

Each protocol gets its own values. For every split of the config, the split cuts the
interactions into training and test, and the test part is dropped on the spot; the same
protocol applied to the training part gives a fit part and a validation part
(`ranking.splits.validation_split`: leave-last-out again, the last tenth of the training
time for the temporal split), and every trial fits a model on the fit part and scores
NDCG@k on the validation part (Optuna, seeded TPE, one study per model and split). The
chosen values go into a copy of the config, in a `[tuned.splits.NAME]` table per split
saying what was tuned, on what, with how many trials, and the values; `embedrec evaluate`
on that copy runs each split with its own values and reports the test split once.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from embedrec.common.progress import Progress
from embedrec.embedders.two_tower import default_text_fn
from embedrec.eval.models.baselines import Catalog
from embedrec.eval.models.config import ExperimentConfig, load_experiment_config
from embedrec.eval.models.leaderboard import MODELS, load_data, score_model, split_ratings
from embedrec.eval.models.params import SplitTuning, TuningRecord
from embedrec.eval.models.search_space import (
    SPACES,
    Patch,
    current_params,
    merge,
    pick,
    space_of,
)
from embedrec.eval.models.toml_write import dumps
from embedrec.ranking.splits import describe_validation, validation_split

TextFn = Callable[[list[str]], np.ndarray]


@dataclass
class Study:
    """One model's search: its key, the best patch and its validation score."""

    model: str
    best: Patch
    score: float
    trials: int
    """Trials run (fewer than asked for when a timeout stopped the search)."""


def require_optuna() -> Any:
    try:
        # Optuna comes with the optional extra 'recsys'
        import optuna
    except ImportError:
        raise ValueError(
            "embedrec tune needs Optuna, from the optional extra 'recsys': "
            "pip install 'embedrec[recsys]'"
        ) from None
    return optuna


def apply(config: ExperimentConfig, patch: Patch) -> ExperimentConfig:
    """`config` with `patch` laid over it, validated (a value out of range raises)."""
    return ExperimentConfig.model_validate(merge(config.model_dump(), patch))


def _memo(text_fn: TextFn | None) -> TextFn:
    """Embed each distinct list of texts once across trials; load the default text embedder
    only if a model asks for text."""
    seen: dict[tuple[str, ...], np.ndarray] = {}
    fn = [text_fn]

    def call(texts: list[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in seen:
            if fn[0] is None:
                fn[0] = default_text_fn()
            seen[key] = fn[0](texts)
        return seen[key]

    return call


def _report(progress: Progress) -> Callable[[Any, Any], None]:
    """An Optuna callback: one progress step per finished trial, with its value and params."""

    def callback(study: Any, trial: Any) -> None:
        progress.update(1, value=trial.value, best=study.best_value, **trial.params)

    return callback


def search_model(
    key: str,
    config: ExperimentConfig,
    catalog: Catalog,
    validation: pd.DataFrame,
    trials: int,
    *,
    text_fn: TextFn,
    timeout: float | None = None,
    stream: TextIO = sys.stderr,
    label: str | None = None,
) -> Study:
    """Search `key`'s space: the config's own values first, then seeded TPE; each trial fits
    on `catalog` (its training interactions) and is scored on `validation`."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = config.eval.k
    label = label or key
    space = space_of(key, config.model_dump())

    def objective(trial: Any) -> float:
        model = MODELS[key](apply(config, space(trial)), text_fn, False)
        model.fit(catalog)
        return score_model(model, catalog, validation, k)[f"ndcg@{k}"]

    # Optuna's default is 10 random trials before TPE models anything; a short search would
    # never get past them
    startup = min(10, max(3, trials // 3))
    sampler = optuna.samplers.TPESampler(seed=config.eval.seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler, study_name=key)
    study.enqueue_trial(current_params(key, config.model_dump()), skip_if_exists=True)
    # every_s=0: one line per trial where the stream is not a terminal (trials are slow)
    with Progress(trials, f"tune {label}", "trials", stream=stream, every_s=0.0) as progress:
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[_report(progress)])
    best = space(optuna.trial.FixedTrial(study.best_params))
    return Study(key, best, study.best_value, len(study.trials))


def tunable(config: ExperimentConfig, wanted: Sequence[str] | None) -> list[str]:
    """The models to tune: `wanted`, or every model of the config that has a search space."""
    keys = list(wanted) if wanted else [m for m in config.eval.models if m in SPACES]
    unknown = [m for m in keys if m not in SPACES]
    if unknown:
        raise ValueError(f"no search space for {unknown[0]!r}; tunable: {', '.join(SPACES)}")
    return keys


def search(
    config: ExperimentConfig,
    split: str,
    users: pd.DataFrame,
    items: pd.DataFrame,
    train: pd.DataFrame,
    trials: int,
    *,
    text_fn: TextFn,
    models: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: TextIO = sys.stderr,
) -> SplitTuning:
    """Tune on `train` alone (the training part of `split`): carve its validation by the
    same protocol, search each model from the values the config has for this split, and
    say what the objective saw."""
    keys = tunable(config, models)
    base = config.for_split(split)
    ratio, seed = config.eval.ratio, config.eval.seed
    fit, validation = validation_split(split, train, ratio=ratio, seed=seed)
    catalog = Catalog.trained_on(users, items, fit, config.data.towers())
    label = f"{{key}} on {split}" if len(config.eval.splits) > 1 else "{key}"
    studies = [
        search_model(
            key, base, catalog, validation, trials, text_fn=text_fn, timeout=timeout,
            stream=stream, label=label.format(key=key),
        )
        for key in keys
    ]  # fmt: skip
    on = (
        f"validation: {describe_validation(split, ratio=ratio, seed=seed)} "
        f"({len(fit)} interactions to fit, {len(validation)} to validate); the test part "
        "was set aside before tuning and never read"
    )
    values: Patch = {}
    for study in studies:
        values = merge(values, study.best)
    return SplitTuning(
        on=on,
        best={s.model: round(s.score, 6) for s in studies},
        trials_by_model={s.model: s.trials for s in studies},
        values=values,
    )


def tune(
    config: ExperimentConfig,
    source: str,
    trials: int,
    *,
    data: Any = None,
    text_fn: TextFn | None = None,
    models: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: TextIO = sys.stderr,
) -> ExperimentConfig:
    """Tune the models of `config` (read from `source`) on each of `splits` (default: the
    config's), each on its own validation, and return the tuned config."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    names = list(splits or config.eval.splits)
    unknown = [s for s in names if s not in config.eval.splits]
    if unknown:
        raise ValueError(f"split {unknown[0]!r} is not in [eval] splits: {config.eval.splits}")
    tunable(config, models)  # an unknown model fails before any data is read
    if data is None:
        data = load_data(config)
    embed = _memo(text_fn)
    chosen = {}
    for name in names:
        train, _ = split_ratings(name, data.ratings, config)  # the test part stops here
        chosen[name] = search(
            config, name, data.users, data.items, train, trials,
            text_fn=embed, models=models, timeout=timeout, stream=stream,
        )  # fmt: skip
    record = TuningRecord(
        config=source,
        metric=f"ndcg@{config.eval.k}",
        trials=trials,
        sampler=f"Optuna TPE (seed {config.eval.seed}); the config's own values tried first",
        splits=chosen,
    )
    return config.model_copy(update={"tuned": _after(config.tuned, record)})


def _after(earlier: TuningRecord | None, later: TuningRecord) -> TuningRecord:
    """`later` on top of `earlier`, split by split: the models tuned later replace their
    earlier results and values, the others are kept; the source is the config the first
    run started from."""
    if earlier is None:
        return later
    if earlier.metric != later.metric:
        raise ValueError(
            f"cannot combine tuning runs on different metrics: {earlier.metric} and {later.metric}"
        )
    splits = dict(earlier.splits)
    for name, new in later.splits.items():
        old = splits.get(name)
        if old is None:
            splits[name] = new
            continue
        if old.on != new.on:
            raise ValueError(
                f"cannot combine tuning runs of {name!r} on different validation data: "
                f"{old.on!r} and {new.on!r}"
            )
        splits[name] = new.model_copy(
            update={
                "best": {**old.best, **new.best},
                "trials_by_model": {**old.trials_by_model, **new.trials_by_model},
                "values": merge(old.values, new.values),
            }
        )
    return later.model_copy(update={"config": earlier.config, "splits": splits})


def combine(base: ExperimentConfig, other: ExperimentConfig, name: str) -> ExperimentConfig:
    """`base` with the models that `other` (a config `embedrec tune` wrote, e.g. from a run
    in parallel on the same config) tuned: their values and their tuning record, split by
    split. Each model's search is independent of the other models' values, so this is the
    config tuning them one after the other would have written. A model both tuned on a
    split keeps the values with the better validation score there, and the trials of both
    count."""
    if other.tuned is None:
        raise ValueError(f"{name}: no [tuned] table; it was not written by embedrec tune")
    ours = base.tuned
    splits = {}
    for split, theirs in other.tuned.splits.items():
        mine = ours.splits.get(split) if ours is not None else None
        mine_best = mine.best if mine is not None else {}
        won = [m for m, score in theirs.best.items() if score > mine_best.get(m, -math.inf)]
        counts = dict(theirs.trials_by_model)
        if mine is not None:
            counts = {m: n + mine.trials_by_model.get(m, 0) for m, n in counts.items()}
        kept = {m: mine_best[m] for m in theirs.best if m not in won}
        splits[split] = theirs.model_copy(
            update={"values": pick(theirs.values, won), "best": {**theirs.best, **kept},
                    "trials_by_model": counts}
        )  # fmt: skip
    later = other.tuned.model_copy(update={"splits": splits})
    return base.model_copy(update={"tuned": _after(ours, later)})


def default_out(config_path: Path) -> Path:
    return config_path.with_name(f"{config_path.stem}.tuned.toml")


def save(config: ExperimentConfig, path: Path) -> Path:
    """Write `config` as TOML (every value spelled out) and check that it reads back. Its
    model path and data files are written relative to `path`'s folder, from which they are
    read back, so the tuned config moves with the checkout it lives in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = Path(os.path.abspath(config.model_path))  # a config read without a file: cwd's
    config = config.model_copy(update={"model_path": model})
    values = config.model_dump(mode="json", exclude_none=True)
    folder = os.path.abspath(path.parent)
    values["model_path"] = os.path.relpath(model, folder)
    data = values["data"]
    if data.get("dataset") is None:  # a packaged dataset's paths are inside its own folder
        for table in (data[key] for key in ("interactions", "items", "users") if key in data):
            table["path"] = os.path.relpath(os.path.abspath(table["path"]), folder)
    if "cache" in data:
        data["cache"] = os.path.relpath(os.path.abspath(data["cache"]), folder)
    header = f"# Written by embedrec tune from {config.tuned.config if config.tuned else '?'}\n"
    path.write_text(header + dumps(values))
    if load_experiment_config(path) != config:
        raise RuntimeError(f"{path}: the written config does not read back as the tuned one")
    return path
