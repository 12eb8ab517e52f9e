"""What `embedrec tune` searches for each model: a function of an Optuna trial that returns
a patch of the experiment config (nested tables, as in the TOML file).

Ranges are wide on purpose (log scales for rates and weights) and bounded by what the
config accepts; every patch is validated through the config before a model is built.
Cornac's BPR and BiVAE are not searched: they rerun Recommenders' own settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
}
"""Model key (as in `[eval] models`) -> its search space."""


def merge(base: dict[str, Any], patch: Patch) -> dict[str, Any]:
    """`base` with `patch` laid over it, table by table (neither is modified)."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
