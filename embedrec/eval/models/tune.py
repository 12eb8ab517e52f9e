"""`embedrec tune`: hyperparameters chosen on validation only.

The config's first split cuts its interactions into training and test; the test part is
dropped on the spot. The same split applied again to the training part gives a fit part and
a validation part, and every trial fits a model on the fit part and scores NDCG@k on the
validation part (Optuna, seeded TPE, one study per model). The chosen values go into a copy
of the config, with a `[tuned]` table saying what was tuned, on what and with how many
trials; `embedrec evaluate` on that copy then reports the test split once.
"""

from __future__ import annotations

import math
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
from embedrec.eval.models.params import TuningRecord
from embedrec.eval.models.search_space import SPACES, Patch, merge
from embedrec.eval.models.toml_write import dumps
from embedrec.ranking.splits import describe_split

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


class _Recorder:
    """Stands in for an Optuna trial to learn which config path each parameter sets."""

    def _slot(self, name: str, *_: Any, **__: Any) -> _Slot:
        return _Slot(name)

    suggest_categorical = suggest_float = suggest_int = _slot


@dataclass(frozen=True)
class _Slot:
    name: str


def current_params(key: str, config: ExperimentConfig) -> dict[str, Any]:
    """The config's present values of the parameters `key`'s space searches."""
    out: dict[str, Any] = {}

    def walk(patch: Patch, values: dict[str, Any]) -> None:
        for name, sub in patch.items():
            if isinstance(sub, dict):
                walk(sub, values[name])
            # a searched value, not one the space fixes; None (a default chosen in code) is
            # left for the sampler
            elif isinstance(sub, _Slot) and values[name] is not None:
                out[sub.name] = values[name]

    walk(SPACES[key](_Recorder()), config.model_dump())
    return out


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
) -> Study:
    """Search `key`'s space: the config's own values first, then seeded TPE; each trial fits
    on `catalog` (its training interactions) and is scored on `validation`."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = config.eval.k
    space = SPACES[key]

    def objective(trial: Any) -> float:
        model = MODELS[key](apply(config, space(trial)), text_fn, False)
        model.fit(catalog)
        return score_model(model, catalog, validation, k)[f"ndcg@{k}"]

    # Optuna's default is 10 random trials before TPE models anything; a short search would
    # never get past them
    startup = min(10, max(3, trials // 3))
    sampler = optuna.samplers.TPESampler(seed=config.eval.seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler, study_name=key)
    study.enqueue_trial(current_params(key, config), skip_if_exists=True)
    # every_s=0: one line per trial where the stream is not a terminal (trials are slow)
    with Progress(trials, f"tune {key}", "trials", stream=stream, every_s=0.0) as progress:
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
    users: pd.DataFrame,
    items: pd.DataFrame,
    train: pd.DataFrame,
    trials: int,
    *,
    text_fn: TextFn | None = None,
    models: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: TextIO = sys.stderr,
) -> tuple[list[Study], str]:
    """Tune on `train` alone (the training part of the first split): split it again into
    fit and validation parts, search each model, and say what the objective saw."""
    keys = tunable(config, models)
    name = config.eval.splits[0]
    fit, validation = split_ratings(name, train, config)
    catalog = Catalog.trained_on(users, items, fit, config.data.towers())
    embed = _memo(text_fn)
    studies = [
        search_model(
            key, config, catalog, validation, trials, text_fn=embed, timeout=timeout, stream=stream
        )
        for key in keys
    ]
    split = describe_split(name, ratio=config.eval.ratio, seed=config.eval.seed)
    on = (
        f"validation: the split '{split}' applied to the training part of the same split "
        f"({len(fit)} interactions to fit, {len(validation)} to validate); the test part "
        "was set aside before tuning and never read"
    )
    return studies, on


def tune(
    config: ExperimentConfig,
    source: str,
    trials: int,
    *,
    data: Any = None,
    text_fn: TextFn | None = None,
    models: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: TextIO = sys.stderr,
) -> ExperimentConfig:
    """Tune the models of `config` (read from `source`) and return the tuned config."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    if data is None:
        data = load_data(config)
    train, _ = split_ratings(
        config.eval.splits[0], data.ratings, config
    )  # the test part stops here
    studies, on = search(
        config, data.users, data.items, train, trials,
        text_fn=text_fn, models=models, timeout=timeout, stream=stream,
    )  # fmt: skip
    tuned = config
    for study in studies:
        tuned = apply(tuned, study.best)
    return tuned.model_copy(update={"tuned": _record(config, source, trials, studies, on)})


def _record(
    config: ExperimentConfig, source: str, trials: int, studies: list[Study], on: str
) -> TuningRecord:
    """What this run did, added to what earlier runs did when `config` was tuned already."""
    record = TuningRecord(
        config=source,
        on=on,
        metric=f"ndcg@{config.eval.k}",
        trials=trials,
        trials_by_model={s.model: s.trials for s in studies},
        sampler=f"Optuna TPE (seed {config.eval.seed}); the config's own values tried first",
        best={s.model: round(s.score, 6) for s in studies},
    )
    return _after(config.tuned, record)


def _after(earlier: TuningRecord | None, later: TuningRecord) -> TuningRecord:
    """`later` on top of `earlier`: the models tuned later replace their earlier results,
    the others are kept; the source is the config the first run started from."""
    if earlier is None:
        return later
    if earlier.on != later.on or earlier.metric != later.metric:
        raise ValueError(
            f"cannot combine tuning runs on different validation data or metrics: "
            f"{earlier.on!r} ({earlier.metric}) and {later.on!r} ({later.metric})"
        )
    before = earlier.trials_by_model or dict.fromkeys(earlier.best, earlier.trials)
    counts = later.trials_by_model or dict.fromkeys(later.best, later.trials)
    return later.model_copy(
        update={
            "config": earlier.config,
            "best": {**earlier.best, **later.best},
            "trials_by_model": {**before, **counts},
        }
    )


def _space_paths(key: str) -> list[tuple[str, ...]]:
    """The config paths `key`'s search space sets, searched or fixed."""
    out: list[tuple[str, ...]] = []

    def walk(patch: Patch, path: tuple[str, ...]) -> None:
        for name, sub in patch.items():
            if isinstance(sub, dict):
                walk(sub, (*path, name))
            else:
                out.append((*path, name))

    walk(SPACES[key](_Recorder()), ())
    return out


def combine(base: ExperimentConfig, other: ExperimentConfig, name: str) -> ExperimentConfig:
    """`base` with the models that `other` (a config `embedrec tune` wrote, e.g. from a run
    in parallel on the same config) tuned: their values and their tuning record. Each
    model's search is independent of the other models' values, so this is the config
    tuning them one after the other would have written. A model both tuned keeps the
    values with the better validation score, and the trials of both count."""
    if other.tuned is None:
        raise ValueError(f"{name}: no [tuned] table; it was not written by embedrec tune")
    theirs, ours = other.tuned, base.tuned
    mine = ours.best if ours is not None else {}
    won = [m for m, score in theirs.best.items() if score > mine.get(m, -math.inf)]
    values = other.model_dump()
    patch: Patch = {}
    for key in won:
        for path in _space_paths(key):
            value, where = values, patch
            for part in path[:-1]:
                value, where = value[part], where.setdefault(part, {})
            where[path[-1]] = value[path[-1]]
    counts = theirs.trials_by_model or dict.fromkeys(theirs.best, theirs.trials)
    if ours is not None:
        before = ours.trials_by_model or dict.fromkeys(ours.best, ours.trials)
        counts = {m: n + before.get(m, 0) for m, n in counts.items()}
    later = theirs.model_copy(
        update={"best": {**theirs.best, **{m: mine[m] for m in theirs.best if m not in won}},
                "trials_by_model": counts}
    )  # fmt: skip
    return apply(base, patch).model_copy(update={"tuned": _after(ours, later)})


def default_out(config_path: Path) -> Path:
    return config_path.with_name(f"{config_path.stem}.tuned.toml")


def save(config: ExperimentConfig, path: Path) -> Path:
    """Write `config` as TOML (every value spelled out) and check that it reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by embedrec tune from {config.tuned.config if config.tuned else '?'}\n"
    path.write_text(header + dumps(config.model_dump(mode="json", exclude_none=True)))
    if load_experiment_config(path) != config:
        raise RuntimeError(f"{path}: the written config does not read back as the tuned one")
    return path
