"""A saved two-tower model's item tower as an embedder for the ingestion pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedrec.common.files import file_sha256
from embedrec.embedders.base import CatalogRow
from embedrec.embedders.two_tower.features import TextFn
from embedrec.embedders.two_tower.model import TwoTowerModel


class TwoTowerItemEmbedder:
    """Item vectors of a saved two-tower model. The catalog's metadata columns carry the
    item features the model declares, so ingest the catalog with those columns stored."""

    modality = "item"

    def __init__(
        self, path: str | Path, *, text_fn: TextFn | None = None, device: str | None = None
    ) -> None:
        self.path = Path(path)
        self.model = TwoTowerModel.load(self.path, text_fn=text_fn, device=device)
        self.name = f"two-tower:{self.path.name}@sha256:{file_sha256(self.path)}"
        self.dim = self.model.config.vector_dim
        self.metric = self.model.config.metric
        """The metric a store of these vectors must use (None: any); ingest opens with it."""

    def prepare(self, row: CatalogRow) -> dict[str, Any]:
        """The row's id and metadata: the catalog's columns carry the item features."""
        return {"id": row.id, **row.metadata}

    def embed(self, batch: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Item rows: the id (`item_id`, the catalog's own id column, or `id` as the
        ingestion pipeline names it) and the model's declared item feature columns."""
        return self.model.item_vectors(batch)


def load_item_embedder(path: str | Path) -> TwoTowerItemEmbedder:
    return TwoTowerItemEmbedder(path)


def from_spec(arg: str | None, **kw: Any) -> TwoTowerItemEmbedder:
    """`get_embedder("two-tower:PATH")`: the item tower of the model saved at PATH."""
    if not arg:
        raise ValueError("the two-tower embedder needs a model file: two-tower:PATH")
    return TwoTowerItemEmbedder(arg, **kw)
