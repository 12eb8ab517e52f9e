"""Who the users are, what they rated, and which features a new user is asked for.

The tables come from the serve config's `[users]` section, read by the service's own reader
(`read_users`: a train config's [data], or users and ratings files), so the app shows the
same users and the same seen items that recommendations leave out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from embedrec.retrieval.config import UsersConfig
from embedrec.retrieval.users import read_users
from embedrec.ui.catalog import MAX_OPTIONS

USER_ID = "user_id"
RATING = "rating"

InputKind = Literal["number", "choice", "multi", "text"]


@dataclass(frozen=True)
class FeatureInput:
    """One field of the new-user form."""

    name: str
    kind: InputKind
    options: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False


@dataclass
class UserData:
    users: pd.DataFrame
    ratings: pd.DataFrame

    @classmethod
    def from_config(cls, config: UsersConfig) -> UserData:
        users, ratings = read_users(config)
        users = users.assign(user_id=users[USER_ID].astype(str))
        ratings = ratings.assign(
            user_id=ratings[USER_ID].astype(str), item_id=ratings["item_id"].astype(str)
        )
        if RATING in ratings.columns:
            ratings[RATING] = pd.to_numeric(ratings[RATING], errors="coerce")
        return cls(users.reset_index(drop=True), ratings.reset_index(drop=True))

    @property
    def user_ids(self) -> list[str]:
        return self.users[USER_ID].tolist()

    def top_rated(self, user_id: str, n: int) -> pd.DataFrame:
        """The user's n highest-rated items (by the rating column where the table has one,
        else in the table's order): item_id and, when known, rating."""
        mine = self.ratings[self.ratings[USER_ID] == str(user_id)]
        if RATING in mine.columns:
            mine = mine.sort_values(RATING, ascending=False, kind="stable")
        cols = ["item_id", *([RATING] if RATING in mine.columns else [])]
        return mine[cols].head(n).reset_index(drop=True)

    def features_of(self, user_id: str) -> dict[str, Any]:
        """The user's features; a whole number read into a float column shows as an int
        (age 24, not 24.0)."""
        row = self.users[self.users[USER_ID] == str(user_id)]
        found = {} if row.empty else row.iloc[0].drop(USER_ID).to_dict()
        return {k: _whole(v) for k, v in found.items()}


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def declared_user_features(model_path: Path | None) -> list[dict[str, Any]] | None:
    """The user tower's declared features from the model's JSON beside its .pt file
    (`towers.user.features`: column and kind each), or None where the model records none."""
    if model_path is None:
        return None
    meta = Path(model_path).with_suffix(".json")
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    towers = info.get("towers") or info.get("config", {}).get("towers")
    features = (towers or {}).get("user", {}).get("features")
    return features if isinstance(features, list) else None


def user_feature_inputs(users: pd.DataFrame, model_path: Path | None) -> list[FeatureInput]:
    """The fields a new user fills in: the features the model declares where it records
    them, else the user table's columns (numbers, and strings with few enough values)."""
    declared = declared_user_features(model_path)
    if declared is not None:
        kinds = {"numeric": "number", "categorical": "choice", "multi": "multi", "text": "text"}
        wanted = [
            (f["column"], kinds[f["kind"]])
            for f in declared
            if f.get("column") and f["kind"] in kinds
        ]
    else:
        wanted = [(c, "") for c in users.columns if c != USER_ID]
    out = []
    for column, kind in wanted:
        field = _input(column, users[column] if column in users.columns else None, kind)
        if field is not None:
            out.append(field)
    return out


def _input(name: str, values: pd.Series | None, kind: str) -> FeatureInput | None:
    if values is None:
        return FeatureInput(name, "text") if kind in ("", "text", "choice") else None
    numbers = pd.to_numeric(values, errors="coerce")
    if kind == "number" or (not kind and numbers.notna().all() and len(numbers)):
        integer = bool((numbers.dropna() % 1 == 0).all())
        return FeatureInput(name, "number", low=numbers.min(), high=numbers.max(), integer=integer)
    if kind == "multi":
        options = sorted(
            {str(x) for v in values.dropna() for x in (v if isinstance(v, list) else [v])}
        )
        return FeatureInput(name, "multi", tuple(options))
    options = tuple(sorted(values.dropna().astype(str).unique()))
    if kind == "text" or len(options) > MAX_OPTIONS:
        return FeatureInput(name, "text") if kind else None
    return FeatureInput(name, "choice", options)
