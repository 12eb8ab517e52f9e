"""What `embedrec tune` searches for the next-item models (see eval/search_space.py).

The Cornac models' epochs are searched within what 2 CPU cores afford per trial (one SASRec
epoch over ML-100k's leave-last-out training prefixes at max_len 20: 28 CPU s; at 50: 75 s;
docs/leaderboard.md, 'Next item'); max_len stays the config's; the other ranges are the
papers' and the reference implementations' (cited at each space), and the first trial is
the config's own values (Cornac's defaults).
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
    # Kang & McAuley (SASRec, ICDM 2018, section IV-B): Adam at 0.001, dropout 0.2 on
    # MovieLens-1M and 0.5 on the sparser sets, 50 dimensions; Sun et al. (BERT4Rec, CIKM
    # 2019, section 4.3): Adam at 1e-4, dropout 0.1, 64 dimensions; Cornac's default: 100.
    # The ranges span both papers and Cornac. The epochs are what a trial affords here: at
    # max_len 20 and embedding 100 a 5-epoch ML-100k trial took 6 CPU minutes, so 6 epochs
    # bound a trial near 7; 4 was the ceiling before, but validation rose 0.057 -> 0.078
    # from 1 to 2 epochs and 5 epochs won both searches (docs/leaderboard.md, 'Next item')
    def space(trial: Any) -> Patch:
        return {
            "baselines": {
                table: {
                    "n_epochs": trial.suggest_int("n_epochs", 1, 6),
                    "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
                    "dropout": trial.suggest_float("dropout", 0.1, 0.5),
                    "embedding_dim": trial.suggest_categorical("embedding_dim", [50, 64, 100]),
                }
            }
        }

    return space


def gru4rec(trial: Any) -> Patch:
    # the ranges of GRU4Rec's own search space for the cross-entropy loss (Hidasi's official
    # implementation, github.com/hidasib/GRU4Rec, paramspaces/gru4rec_xe_standard_parspace
    # .json: batch 32-256, rate 0.01-0.25, embedding dropout 0-0.5, hidden dropout 0-0.7,
    # momentum 0-0.9), of which Cornac's GRU4Rec is a port, with the batch widened to
    # Cornac's default 512; the layer stays the config's (Cornac's 100 units; that space's
    # 64-512 would multiply a trial's cost) and the epochs are what a trial affords here
    return {
        "baselines": {
            "gru4rec": {
                "n_epochs": trial.suggest_int("n_epochs", 1, 10),
                "batch_size": trial.suggest_int("batch_size", 32, 512, step=16),
                "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.25, log=True),
                "dropout_p_embed": trial.suggest_float("dropout_p_embed", 0.0, 0.5),
                "dropout_p_hidden": trial.suggest_float("dropout_p_hidden", 0.0, 0.7),
                "momentum": trial.suggest_float("momentum", 0.0, 0.9),
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
