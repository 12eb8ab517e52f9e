"""The TOML config of `embedrec train` / `evaluate` / `tune` (see configs/two_tower.toml):
the `[data]` section (data/config.py), the models' parameters and the `[eval]` protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from embedrec.common.config import ConfigFileError, from_config_folder, load_model
from embedrec.data.config import DataSection
from embedrec.embedders.two_tower import TwoTowerConfig
from embedrec.eval.models.params import BaselineParams, TuningRecord
from embedrec.eval.models.search_space import merge
from embedrec.ranking.splits import SPLITS


def _bpr_default() -> TwoTowerConfig:
    return TwoTowerConfig(
        features=False, text=False, loss="bpr", normalize=False, id_dropout=0.0,
        dim=64, lr=3e-3, l2=1e-4, epochs=60, patience=3,
    )  # fmt: skip


ModelKey = Literal[
    "most-popular", "content-knn", "bpr", "two-tower", "ease", "als", "cornac-bpr", "cornac-bivae",
    "recent-popularity", "transitions", "cornac-sasrec", "cornac-bert4rec", "cornac-gru4rec",
    "cornac-fpmc", "cornac-spop",
]  # fmt: skip
"""als and the cornac-* models need the optional extra `recsys`; recent-popularity,
transitions and the cornac-* next-item models need timestamps."""


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    """The cut-off of every ranking metric (ndcg@k, recall@k, ...)."""
    seed: int = 42
    """Seed of the splits and of the models' training."""
    ratio: float = Field(0.75, gt=0, lt=1)
    """Share of each user's interactions in the training part (stratified, random)."""
    splits: list[str] = ["stratified", "leave-last-out"]
    """Any of ranking.splits.SPLITS: stratified, random, leave-last-out, temporal."""
    cold_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of items held out entirely for the cold-start report; 0 skips it."""
    stores: list[str] = ["faiss:?index=HNSW32", "qdrant+edge:"]
    """Stores to score through besides exact ranking; an empty path means memory (FAISS) or
    a temporary folder. A store whose backend does not import is skipped with a note."""
    knn_neighbours: int = Field(50, ge=1)
    """content-knn: neighbours per item."""
    models: list[ModelKey] = [
        "most-popular", "content-knn", "bpr", "two-tower",
    ]  # fmt: skip
    """The models to evaluate, slowest first (see ModelKey)."""

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
    """Where `embedrec train` writes the two-tower model (`--out` overrides it)."""
    two_tower: TwoTowerConfig = TwoTowerConfig()
    bpr: TwoTowerConfig = Field(default_factory=_bpr_default)
    baselines: BaselineParams = BaselineParams()
    eval: EvalSection = EvalSection()
    published: list[Published] = []
    tuned: TuningRecord | None = None
    """Written by `embedrec tune`: per split, what was tuned on what validation, with how
    many trials, and the values chosen."""

    @field_validator("model_path")
    @classmethod
    def _from_config_folder(cls, value: Path, info: ValidationInfo) -> Path:
        return from_config_folder(value, info, "model_path")

    @model_validator(mode="after")
    def _tuned_splits(self) -> ExperimentConfig:
        for split in self.tuned.splits if self.tuned else {}:
            if split not in SPLITS:
                raise ValueError(f"[tuned.splits]: unknown split {split!r}")
            try:
                self.for_split(split)
            except ValueError as exc:
                raise ValueError(f"[tuned.splits.{split}] values: {exc}") from None
        return self

    def for_split(self, split: str) -> ExperimentConfig:
        """This config with the values `embedrec tune` chose for `split` laid over it (as
        it is where that split was not tuned); its `tuned` is left out."""
        record = self.tuned.splits.get(split) if self.tuned else None
        if record is None or not record.values:
            return self
        base = self.model_dump(exclude={"tuned"})
        return ExperimentConfig.model_validate(merge(base, record.values))


def load_experiment_config(path: str | Path) -> ExperimentConfig:
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
