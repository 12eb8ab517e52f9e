"""What `embedrec tune` searches for each model: a function of an Optuna trial that returns
a patch of the experiment config (nested tables, as in the TOML file).

Ranges are wide on purpose (log scales for rates and weights) and bounded by what the
config accepts; every patch is validated through the config before a model is built.
Cornac's BPR and BiVAE are not searched: they rerun Recommenders' own settings. The
two-tower's space follows its user encoder (`space_of`): the sequence encoder searches its
own keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedrec.eval.models.sequential.spaces import SPACES as NEXT_ITEM_SPACES

Patch = dict[str, Any]


def two_tower(trial: Any) -> Patch:
    # epochs are searched, so the trainer's early stopping and refit are off (val_fraction
    # 0): one training run per trial, and one for the final model
    return {
        "two_tower": {
            "negatives": trial.suggest_categorical("negatives", ["in-batch", "all"]),
            "dim": trial.suggest_categorical("dim", [32, 64, 128]),
            "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
            "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.05, 0.5, log=True),
            "id_dropout": trial.suggest_float("id_dropout", 0.0, 0.3),
            "epochs": trial.suggest_int("epochs", 10, 40, step=5),
            "val_fraction": 0.0,
        }
    }


def sequence_two_tower(trial: Any) -> Patch:
    # the two-tower with `user_encoder = "sequence"`: its history, blocks, heads (each a
    # divisor of every `dim` the configs use), time, staleness, prior, recency and trailing
    # popularity inputs; epochs searched as for the static tower
    return {
        "two_tower": {
            "history": trial.suggest_categorical("history", [10, 20, 50, 100]),
            "layers": trial.suggest_int("layers", 1, 3),
            "heads": trial.suggest_categorical("heads", [1, 2, 4]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "time_buckets": trial.suggest_categorical("time_buckets", [0, 16]),
            "staleness_buckets": trial.suggest_categorical("staleness_buckets", [0, 24]),
            "prior": trial.suggest_categorical("prior", [True, False]),
            "recency_days": trial.suggest_categorical(
                "recency_days", [0.0, 3.0, 7.0, 14.0, 30.0, 90.0]
            ),
            # the shop's temporal validation (3 seeds each, docs/leaderboard.md): 60 days
            # best, 30 and 120 next, 14 below none; needs timestamps, as staleness does
            "popularity_days": trial.suggest_categorical(
                "popularity_days", [0.0, 30.0, 60.0, 120.0]
            ),
            "negatives": trial.suggest_categorical("negatives", ["in-batch", "all"]),
            "lr": trial.suggest_float("lr", 3e-4, 5e-3, log=True),
            "temperature": trial.suggest_float("temperature", 0.05, 0.3, log=True),
            "id_dropout": trial.suggest_float("id_dropout", 0.0, 0.3),
            # on the temporal split's validation the best stop came after 3-6 epochs
            "epochs": trial.suggest_int("epochs", 2, 40, log=True),
            "val_fraction": 0.0,
        }
    }


def bpr(trial: Any) -> Patch:
    # epochs are searched, so the trainer's own early stopping is off (val_fraction 0): it
    # stops within a few epochs of a noisy validation peak, before strong L2 has converged.
    # sgd with an item bias and rejected negatives is BPR as Rendle et al. and Cornac run it
    return {
        "bpr": {
            "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd"]),
            "item_bias": trial.suggest_categorical("item_bias", [False, True]),
            "reject_positives": trial.suggest_categorical("reject_positives", [False, True]),
            "dim": trial.suggest_categorical("dim", [32, 64, 128, 200]),
            "lr": trial.suggest_float("lr", 5e-4, 5e-2, log=True),
            "l2": trial.suggest_float("l2", 1e-5, 1e-1, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 1e-1, log=True),
            "epochs": trial.suggest_int("epochs", 20, 200, step=20),
            "val_fraction": 0.0,
        }
    }


def content_knn(trial: Any) -> Patch:
    return {"eval": {"knn_neighbours": trial.suggest_int("knn_neighbours", 5, 400, log=True)}}


def ease(trial: Any) -> Patch:
    return {"baselines": {"ease": {"l2": trial.suggest_float("l2", 1.0, 1e4, log=True)}}}


def als(trial: Any) -> Patch:
    return {
        "baselines": {
            "als": {
                "factors": trial.suggest_categorical("factors", [16, 32, 64, 128, 256]),
                "regularization": trial.suggest_float("regularization", 1e-3, 10.0, log=True),
                "alpha": trial.suggest_float("alpha", 0.1, 100.0, log=True),
                "iterations": trial.suggest_int("iterations", 5, 50),
            }
        }
    }


SPACES: dict[str, Callable[[Any], Patch]] = {
    "two-tower": two_tower,
    "bpr": bpr,
    "content-knn": content_knn,
    "ease": ease,
    "als": als,
    **NEXT_ITEM_SPACES,
}
"""Model key (as in `[eval] models`) -> its search space (see `space_of`)."""


def space_of(key: str, values: dict[str, Any]) -> Callable[[Any], Patch]:
    """`key`'s search space for a config (its `model_dump()`): the two-tower's follows the
    config's user encoder."""
    if key == "two-tower" and values.get("two_tower", {}).get("user_encoder") == "sequence":
        return sequence_two_tower
    return SPACES[key]


def merge(base: dict[str, Any], patch: Patch) -> dict[str, Any]:
    """`base` with `patch` laid over it, table by table (neither is modified)."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class _Recorder:
    """Stands in for an Optuna trial to learn which config path each parameter sets."""

    def _slot(self, name: str, *_: Any, **__: Any) -> _Slot:
        return _Slot(name)

    suggest_categorical = suggest_float = suggest_int = _slot


@dataclass(frozen=True)
class _Slot:
    name: str


def current_params(key: str, values: dict[str, Any]) -> dict[str, Any]:
    """The present values (a config's `model_dump()`) of the parameters `key`'s space
    searches."""
    out: dict[str, Any] = {}

    def walk(patch: Patch, here: dict[str, Any]) -> None:
        for name, sub in patch.items():
            if isinstance(sub, dict):
                walk(sub, here[name])
            # a searched value, not one the space fixes; None (a default chosen in code) is
            # left for the sampler
            elif isinstance(sub, _Slot) and here[name] is not None:
                out[sub.name] = here[name]

    walk(space_of(key, values)(_Recorder()), values)
    return out


def space_paths(key: str) -> list[tuple[str, ...]]:
    """The config paths `key`'s search spaces set, searched or fixed (for the two-tower,
    those of either user encoder)."""
    out: list[tuple[str, ...]] = []

    def walk(patch: Patch, path: tuple[str, ...]) -> None:
        for name, sub in patch.items():
            if isinstance(sub, dict):
                walk(sub, (*path, name))
            elif (*path, name) not in out:
                out.append((*path, name))

    walk(SPACES[key](_Recorder()), ())
    if key == "two-tower":
        walk(sequence_two_tower(_Recorder()), ())
    return out


def pick(values: Patch, keys: list[str]) -> Patch:
    """The part of the patch `values` that the spaces of `keys` set."""
    out: Patch = {}
    for key in keys:
        for path in space_paths(key):
            here: Any = values
            for part in path:
                here = here.get(part, _ABSENT) if isinstance(here, dict) else _ABSENT
            if here is _ABSENT:
                continue
            where = out
            for part in path[:-1]:
                where = where.setdefault(part, {})
            where[path[-1]] = here
    return out


_ABSENT = object()
