"""What `embedrec tune` searches for the next-item models (see eval/search_space.py).

The Cornac models' epochs are searched within what 2 CPU cores afford per trial (one SASRec
epoch over ML-100k's leave-last-out training prefixes at max_len 20: 28 CPU s; at 50: 75 s;
docs/leaderboard.md, 'Next item'); max_len stays the config's; the other values start from
Cornac's defaults.
"""

from __future__ import annotations

from typing import Any

Patch = dict[str, Any]


def recent_popularity(trial: Any) -> Patch:
    return {
        "baselines": {
            "recent_popularity": {
                "days": trial.suggest_float("days", 0.5, 120.0, log=True),
                "anchor": trial.suggest_categorical("anchor", ["global", "user"]),
            }
        }
    }


def transitions(trial: Any) -> Patch:
    return {
        "baselines": {
            "transitions": {
                "history": trial.suggest_int("history", 1, 50, log=True),
                "decay": trial.suggest_float("decay", 0.1, 1.0),
            }
        }
    }


def _transformer(table: str) -> Any:
    def space(trial: Any) -> Patch:
        return {
            "baselines": {
                table: {
                    "n_epochs": trial.suggest_int("n_epochs", 1, 4),
                    "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
                    "dropout": trial.suggest_float("dropout", 0.0, 0.5),
                }
            }
        }

    return space


def gru4rec(trial: Any) -> Patch:
    return {
        "baselines": {
            "gru4rec": {
                "n_epochs": trial.suggest_int("n_epochs", 1, 6),
                "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.2, log=True),
                "dropout_p_hidden": trial.suggest_float("dropout_p_hidden", 0.0, 0.5),
            }
        }
    }


def fpmc(trial: Any) -> Patch:
    return {
        "baselines": {
            "fpmc": {
                "n_epochs": trial.suggest_int("n_epochs", 1, 6),
                "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.2, log=True),
                "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 100]),
            }
        }
    }


SPACES = {
    "recent-popularity": recent_popularity,
    "transitions": transitions,
    "cornac-sasrec": _transformer("sasrec"),
    "cornac-bert4rec": _transformer("bert4rec"),
    "cornac-gru4rec": gru4rec,
    "cornac-fpmc": fpmc,
}
"""SPop has nothing to search (its one switch is the paper's model)."""
