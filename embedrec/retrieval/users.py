"""The users a `Recommender` knows: who they are (ids and model features), what each has
rated, in order (their training histories), and the items no one interacted with; read from
the `[users]` section of a serve config, through a train config's `[data]` section or from
two tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from embedrec.data.config import load_data_section
from embedrec.data.dataset import load_dataset
from embedrec.data.tables import read_table
from embedrec.retrieval.config import UsersConfig
from embedrec.retrieval.history import TrainingHistories
from embedrec.stores.errors import ConfigError


@dataclass
class Interactions:
    """Who the users are (id and model features) and what each has rated."""

    users: pd.DataFrame
    seen: dict[str, frozenset[str]]
    popularity: list[tuple[str, int]]
    """Item ids with their rating counts, most rated first (ties by id)."""
    histories: TrainingHistories
    """Each user's interactions in order, the default `Histories` of a `Recommender`."""
    hidden: frozenset[str] = frozenset()
    """Items left out of every recommendation: with `[users] exclude_without_interactions`,
    the catalog items no one interacted with."""

    @classmethod
    def from_frames(cls, users: pd.DataFrame, ratings: pd.DataFrame) -> Interactions:
        for frame, what, cols in (
            (users, "users", ["user_id"]),
            (ratings, "ratings", ["user_id", "item_id"]),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise ConfigError(f"{what} table lacks column(s) {missing}")
        users = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
        pairs = ratings[["user_id", "item_id"]].astype(str)
        seen = {u: frozenset(items) for u, items in pairs.groupby("user_id")["item_id"]}
        counts = pairs["item_id"].value_counts()
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(
            users.reset_index(drop=True),
            seen,
            [(i, int(c)) for i, c in order],
            TrainingHistories(ratings),
        )


def read_users(config: UsersConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The user table and the ratings `[users]` names: through a train config's [data]
    section (canonical user_id / item_id columns), or from the two files. The service and the
    web app both read them here, so the app shows the seen items recommendations leave out."""
    if config.data is not None:
        data = load_dataset(load_data_section(config.data))
        return data.users, data.interactions
    assert config.users is not None and config.ratings is not None  # UsersConfig checks
    ids = {"user_id": str, "item_id": str}  # ids as text; features keep their types
    return read_table(config.users, dtype=ids), read_table(config.ratings, dtype=ids)


def items_without_interactions(config: UsersConfig, interactions: Interactions) -> frozenset[str]:
    """The catalog items of `config.data` that no interaction names."""
    assert config.data is not None  # UsersConfig checks
    items = load_dataset(load_data_section(config.data)).items["item_id"].astype(str)
    return frozenset(items) - {item for item, _ in interactions.popularity}
