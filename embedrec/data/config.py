"""The `[data]` section of a config: a dataset described without code.

The interactions file and its columns, the item catalog (the file and id column `embedrec
ingest` loads, so item vectors land under the same ids), an optional user table, and the
features each tower reads from those tables. Training, evaluation, the store comparison,
drift and the service's user table all read it through `load_data_section`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from embedrec.common.config import from_config_folder, load_model, note_origin
from embedrec.data.registry import known_dataset
from embedrec.data.tables import Format
from embedrec.embedders.two_tower import Feature, Towers, TowerSpec


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    """The table file; a relative path is taken from the config file's folder (from the packaged
    dataset's folder with `dataset`)."""
    format: Format | None = None
    """Default: from the file name (.csv .tsv .jsonl .parquet, optionally .gz)."""
    delimiter: str | None = None
    """CSV/TSV field separator (default: by format, "," or a tab)."""


class InteractionsTable(Table):
    user: str = "user_id"
    """The column holding the user id."""
    item: str = "item_id"
    """The column holding the item id (the catalog's ids)."""
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
    """The column holding the user or item id."""
    features: list[Feature] = []
    """The features this tower reads from the table (`[[data.items.features]]`)."""


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

    @field_validator("dataset")
    @classmethod
    def _packaged(cls, value: str | None) -> str | None:
        return None if value is None else known_dataset(value)

    @model_validator(mode="after")
    def _from_config_folder(self, info: ValidationInfo) -> DataSection:
        """A table's relative path is taken from the config file's folder (a packaged
        dataset's, from the dataset's folder under the cache)."""
        config = (info.context or {}).get("config_file")
        for key in ("interactions", "items", "users"):
            table = getattr(self, key)
            if table is None:
                continue
            if self.dataset is None:
                table.path = from_config_folder(table.path, info, f"data.{key}.path")
            elif config is not None:
                note_origin(table.path, f"data.{key}.path", config)
        self.cache = from_config_folder(self.cache, info, "data.cache")
        return self

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


class _DataFile(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the file's other sections belong to others

    data: DataSection


def load_data_section(path: str | Path) -> DataSection:
    """The `[data]` section of the TOML file at `path` (its other sections are not read)."""
    return load_model(path, _DataFile).data
