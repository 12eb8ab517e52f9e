"""The TOML config of `embedrec train` / `embedrec evaluate` (see configs/two_tower.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from embedrec.config import load_model
from embedrec.embedders.two_tower import TwoTowerConfig


def _bpr_default() -> TwoTowerConfig:
    return TwoTowerConfig(
        features=False, text=False, loss="bpr", normalize=False, id_dropout=0.0,
        dim=64, lr=3e-3, l2=1e-4, epochs=60, patience=3,
    )  # fmt: skip


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Literal["movielens-100k"] = "movielens-100k"
    cache: Path | None = None
    max_users: int | None = Field(None, ge=1)
    """Keep only the first N users (table order) and their ratings, for quick runs."""


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    seed: int = 42
    ratio: float = Field(0.75, gt=0, lt=1)
    splits: list[Literal["stratified", "leave-last-out"]] = ["stratified", "leave-last-out"]
    cold_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of items held out entirely for the cold-start report; 0 skips it."""
    stores: list[str] = ["faiss:?index=HNSW32", "qdrant+edge:"]
    """Stores to score through besides exact ranking; an empty path means memory (FAISS) or
    a temporary folder. A store whose backend does not import is skipped with a note."""
    knn_neighbours: int = Field(50, ge=1)
    models: list[Literal["most-popular", "content-knn", "bpr", "two-tower"]] = [
        "most-popular", "content-knn", "bpr", "two-tower",
    ]  # fmt: skip


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataSection = DataSection()
    model_path: Path = Path("models/two_tower.pt")
    two_tower: TwoTowerConfig = TwoTowerConfig()
    bpr: TwoTowerConfig = Field(default_factory=_bpr_default)
    eval: EvalSection = EvalSection()


def load_config(path: str | Path) -> ExperimentConfig:
    return load_model(path, ExperimentConfig)
