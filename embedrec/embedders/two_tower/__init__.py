"""Learned two-tower user/item vectors: declared features (`features`), their encoders
(`encoders`), the towers and model file (`model`), training (`training`: `fit_two_tower`),
the sequence user tower and its training (`sequence`, `sequence_training`), the default text
function (`text_fn`) and the item tower as an ingestion embedder (`embedder`)."""

from embedrec.embedders.two_tower.embedder import (
    TwoTowerItemEmbedder,
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
from embedrec.embedders.two_tower.fitting import fit_two_tower
from embedrec.embedders.two_tower.model import TwoTowerConfig, TwoTowerModel, Vocab
from embedrec.embedders.two_tower.sequence import last_time
from embedrec.embedders.two_tower.text_fn import default_text_fn

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
    "fit_two_tower",
    "from_spec",
    "last_time",
    "load_item_embedder",
]
