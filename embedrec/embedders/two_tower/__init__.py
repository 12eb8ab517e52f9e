"""Learned two-tower user/item vectors: declared features (`features`), their encoders
(`encoders`), the towers and model file (`model`), training (`training`), the sequence user
tower and its training (`sequence`, `sequence_training`) and the item tower as an ingestion
embedder (`embedder`)."""

from embedrec.embedders.two_tower.embedder import (
    TwoTowerItemEmbedder,
    default_text_fn,
    from_spec,
    load_item_embedder,
)
from embedrec.embedders.two_tower.features import (
    Feature,
    FeatureError,
    TextFn,
    Towers,
    TowerSpec,
)
from embedrec.embedders.two_tower.model import TwoTowerConfig, TwoTowerModel, Vocab

__all__ = [
    "Feature",
    "FeatureError",
    "TextFn",
    "TowerSpec",
    "Towers",
    "TwoTowerConfig",
    "TwoTowerItemEmbedder",
    "TwoTowerModel",
    "Vocab",
    "default_text_fn",
    "from_spec",
    "load_item_embedder",
]
