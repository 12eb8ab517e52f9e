"""The TOML config of `embedrec train` / `embedrec evaluate` (see configs/two_tower.toml).

`[data]` describes a dataset without code: the interactions file and its columns, the item
catalog (the file and id column `embedrec ingest` loads, so item vectors land under the same
ids), an optional user table, and the features each tower reads from those tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from embedrec.config import ConfigFileError, load_model
from embedrec.embedders.two_tower import Feature, Towers, TowerSpec, TwoTowerConfig
from embedrec.eval.model_params import BaselineParams, TuningRecord
from embedrec.ranking.splits import SPLITS

TableFormat = Literal["csv", "tsv", "jsonl", "parquet"]


def _bpr_default() -> TwoTowerConfig:
    return TwoTowerConfig(
        features=False, text=False, loss="bpr", normalize=False, id_dropout=0.0,
        dim=64, lr=3e-3, l2=1e-4, epochs=60, patience=3,
    )  # fmt: skip


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    format: TableFormat | None = None
    """Default: from the file name (.csv .tsv .jsonl .parquet, optionally .gz)."""
    delimiter: str | None = None


class InteractionsTable(Table):
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    """Explicit feedback: the rating column (implicit feedback: leave it out)."""
    min_rating: float | None = None
    """With `rating`: interactions rated below this are not positives and are dropped."""
    timestamp: str | None = None
    """Numbers (seconds since the epoch) or ISO 8601 strings; needed by the time splits."""
    weight: str | None = None
    """A per-interaction weight on the training loss (e.g. purchase quantity)."""

    @model_validator(mode="after")
    def _rating(self) -> InteractionsTable:
        if self.min_rating is not None and self.rating is None:
            raise ValueError("min_rating needs a rating column")
        return self


class EntityTable(Table):
    """The item catalog or the user table: its id column and the tower's features."""

    id: str
    features: list[Feature] = []


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None
    """A packaged dataset (see `embedrec datasets list`): its tables are exported under the
    cache on first use and the paths below are relative to that folder."""
    cache: Path | None = None
    """The cache root for a packaged dataset (default: $EMBEDREC_CACHE)."""
    interactions: InteractionsTable
    items: EntityTable
    users: EntityTable | None = None
    max_users: int | None = Field(None, ge=1)
    """Keep only the first N users (by first interaction) and their interactions, for quick
    runs."""

    def towers(self) -> Towers:
        """The features each tower declares (a dataset without a user table: ids only)."""
        user = (
            TowerSpec(id=self.users.id, features=self.users.features)
            if self.users is not None
            else TowerSpec(id=self.interactions.user)
        )
        return Towers(user=user, item=TowerSpec(id=self.items.id, features=self.items.features))

    @property
    def name(self) -> str:
        return self.dataset or self.interactions.path.stem


ModelKey = Literal[
    "most-popular", "content-knn", "bpr", "two-tower", "ease", "als", "cornac-bpr", "cornac-bivae"
]
"""als, cornac-bpr and cornac-bivae need the optional extra `recsys`."""


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    seed: int = 42
    ratio: float = Field(0.75, gt=0, lt=1)
    splits: list[str] = ["stratified", "leave-last-out"]
    """Any of ranking.splits.SPLITS: stratified, random, leave-last-out, temporal."""
    cold_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of items held out entirely for the cold-start report; 0 skips it."""
    stores: list[str] = ["faiss:?index=HNSW32", "qdrant+edge:"]
    """Stores to score through besides exact ranking; an empty path means memory (FAISS) or
    a temporary folder. A store whose backend does not import is skipped with a note."""
    knn_neighbours: int = Field(50, ge=1)
    models: list[ModelKey] = [
        "most-popular", "content-knn", "bpr", "two-tower",
    ]  # fmt: skip

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
        return value


class Published(BaseModel):
    """Figures someone else published for this dataset (`[[published]]`), shown beside the
    rows measured here and marked as published; they belong to the config, since only the
    dataset's own config knows which published figures are comparable."""

    model_config = ConfigDict(extra="forbid")

    by: str
    """Who published them; each row is named "MODEL (BY)"."""
    source: str
    """Where they were published (a citation, with a link and a version)."""
    split: str
    """The split of `[eval] splits` they were measured on; shown only when it is run."""
    k: int = Field(10, ge=1)
    """The cut-off of their metrics; shown only when `[eval] k` is the same."""
    models: dict[str, dict[str, float]]
    """Model -> metric (as the leaderboard names it, e.g. "ndcg@10", "map") -> figure."""

    @field_validator("split")
    @classmethod
    def _known_split(cls, value: str) -> str:
        if value not in SPLITS:
            raise ValueError(f"unknown split {value!r}; known: {', '.join(SPLITS)}")
        return value


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataSection
    model_path: Path = Path("models/two_tower.pt")
    two_tower: TwoTowerConfig = TwoTowerConfig()
    bpr: TwoTowerConfig = Field(default_factory=_bpr_default)
    baselines: BaselineParams = BaselineParams()
    eval: EvalSection = EvalSection()
    published: list[Published] = []
    tuned: TuningRecord | None = None
    """Written by `embedrec tune`: what was tuned, on what, with how many trials."""


def load_config(path: str | Path) -> ExperimentConfig:
    return load_model(path, ExperimentConfig)


TIME_SPLITS = ("leave-last-out", "temporal")
"""The splits that order interactions by time."""


def check_time_splits(config: ExperimentConfig, splits: list[str], origin: str) -> None:
    """Before any work: a split ordered by time needs `[data.interactions] timestamp`."""
    timed = [s for s in splits if s in TIME_SPLITS]
    table = config.data.interactions
    if timed and table.timestamp is None:
        raise ConfigFileError(
            f"{origin}: [eval] splits {timed} order interactions by time: set "
            f'`timestamp = "COLUMN"` under [data.interactions] (a column of {table.path}), '
            "or leave those splits out of [eval] splits"
        )
