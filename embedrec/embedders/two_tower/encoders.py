"""A tower's input vector: its declared features, fitted on training rows, side by side.

Text features are embedded by a `TextFn` (the text embedder through the embedding cache),
then centred and projected onto principal components fitted on the training rows, so that a
384-d sentence embedding does not outweigh a handful of one-hot columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedrec.embedders.two_tower.features import (
    Feature,
    Fitted,
    TextFn,
    TowerSpec,
    check_category,
    encode_feature,
    fit_feature,
    render,
)
from embedrec.embedders.two_tower.text_fn import default_text_fn


def _embed(text_fn: TextFn | None, texts: list[str]) -> np.ndarray:
    if text_fn is None:
        text_fn = default_text_fn()
    out = np.asarray(text_fn(texts), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise ValueError(f"text embedder returned shape {out.shape} for {len(texts)} texts")
    return out


class TowerEncoder:
    """Encodes rows of one tower's table into its feature matrix."""

    def __init__(
        self,
        spec: TowerSpec,
        fitted: list[Fitted],
        text: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        self.spec = spec
        self.fitted = fitted
        self.text = {name: {k: v.float() for k, v in s.items()} for name, s in (text or {}).items()}

    @property
    def width(self) -> int:
        return sum(f.size for f in self.fitted)

    def validate_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A new entity's features checked against the declaration (`TowerSpec.validate_row`)
        and, for a categorical feature, against what it was trained on: a bool is no
        category, and a number is one only where the training table's categories were
        numbers (a str "1" is an unknown category; an int 1 for {"F", "M"} is a mistake)."""
        checked = self.spec.validate_row(row)
        for feature, fitted in zip(self.spec.features, self.fitted, strict=True):
            if feature.kind == "categorical":
                check_category(feature, fitted, checked[feature.column])
        return checked

    @classmethod
    def fit(
        cls, spec: TowerSpec, rows: pd.DataFrame, text_fn: TextFn | None, components: int
    ) -> TowerEncoder:
        """Vocabularies, buckets, scales and text projections from the training rows."""
        fitted, text = [], {}
        for feature in spec.features:
            raw = None
            if feature.kind == "text":
                raw = _embed(text_fn, render(feature, rows))
                text[feature.name] = _projection(raw, feature, components)
            done = fit_feature(feature, rows, raw)
            if raw is not None:
                done = done.model_copy(update={"size": text[feature.name]["proj"].shape[1]})
            fitted.append(done)
        return cls(spec, fitted, text)

    def encode(self, rows: pd.DataFrame, text_fn: TextFn | None) -> np.ndarray | None:
        """(len(rows), width) float32, or None for a tower without features."""
        if not self.spec.features:
            return None
        blocks = [
            encode_feature(feature, fitted, rows, self._text(feature, rows, text_fn))
            for feature, fitted in zip(self.spec.features, self.fitted, strict=True)
        ]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def _text(self, feature: Feature, rows: pd.DataFrame, text_fn: TextFn | None):
        if feature.kind != "text":
            return None
        raw = _embed(text_fn, render(feature, rows))
        state = self.text[feature.name]
        if raw.shape[1] != state["mean"].shape[0]:
            raise ValueError(
                f"text feature {feature.name!r}: the text embedder gives {raw.shape[1]}-d "
                f"vectors, the model was trained on {state['mean'].shape[0]}-d ones"
            )
        return (raw - state["mean"].numpy()) @ state["proj"].numpy()

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: {k: v.clone() for k, v in s.items()} for name, s in self.text.items()}


def _projection(raw: np.ndarray, feature: Feature, components: int) -> dict[str, torch.Tensor]:
    """Centre and keep the top principal components (all of them, uncentred, for 0)."""
    keep = feature.components if feature.components is not None else components
    dim = raw.shape[1]
    if not keep or keep >= dim:
        return {"mean": torch.zeros(dim), "proj": torch.eye(dim)}
    mean = raw.mean(axis=0)
    _, _, vt = np.linalg.svd(raw - mean, full_matrices=False)
    proj = vt[:keep].T.copy()
    if proj.shape[1] < keep:  # fewer rows than components
        proj = np.pad(proj, ((0, 0), (0, keep - proj.shape[1])))
    return {"mean": torch.from_numpy(mean.astype(np.float32)), "proj": torch.from_numpy(proj)}
