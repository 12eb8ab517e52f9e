"""The features a tower declares (column and kind) and their encoders, fitted on training rows.

Kinds, each one block of the tower's input vector:

- `categorical`: one-hot over the values seen in training; index 0 is the out-of-vocabulary
  bucket, which also takes nulls.
- `numeric`: one-hot over quantile buckets (`buckets`, the default), explicit `edges`, or
  equal-`width` bins (each bin seen in training a category, e.g. ten-year bins); or
  `standardize`d to zero mean and unit variance beside a missing flag.
- `multi`: multi-hot over a list column, or a string split on `separator`; slot 0 counts
  values outside the vocabulary.
- `text`: a template over columns, embedded by the text embedder (through the embedding
  cache) and projected onto its top `components` principal components.

The declaration is what a model file records, so a new user's features can be checked
against it before any vector is computed.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

TextFn = Callable[[list[str]], np.ndarray]
Kind = Literal["categorical", "numeric", "multi", "text"]


class FeatureError(ValueError):
    """A feature value the declared kind cannot take; names the column and the row."""

    def __init__(self, column: str, reason: str, row: Any = None) -> None:
        where = f"row {row}, " if row is not None else ""
        super().__init__(f"{where}column {column!r}: {reason}")
        self.column, self.row, self.reason = column, row, reason


def template_columns(template: str) -> tuple[str, ...]:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    if not names:
        raise ValueError(f"text template {template!r} names no column")
    return tuple(dict.fromkeys(names))


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    """categorical (one-hot over the values seen in training), numeric, multi (several
    categories a cell) or text (a template, embedded)."""
    column: str | None = None
    """The input column (every kind but text)."""
    template: str | None = None
    """text: a template over columns, e.g. "{name} ({brand})"."""
    separator: str | None = None
    """multi: split a string cell on it; a list cell is taken as it is."""
    buckets: int | None = Field(None, ge=2)
    """numeric: one-hot over this many quantile buckets of the training values (the default:
    10)."""
    edges: list[float] | None = None
    """numeric: one-hot over the bins these strictly increasing edges cut."""
    width: float | None = Field(None, gt=0)
    """numeric: one-hot over equal bins of this width (each bin seen in training a category,
    e.g. 10 for ten-year bins)."""
    standardize: bool = False
    """numeric: zero mean and unit variance, beside a missing flag, instead of bins."""
    components: int | None = Field(None, ge=0)
    """text: principal components kept (unset: the model's text_components; 0: all)."""

    @model_validator(mode="after")
    def _fits_kind(self) -> Feature:
        if self.kind == "text":
            if self.template is None or self.column is not None:
                raise ValueError("a text feature takes a template, not a column")
            template_columns(self.template)
        elif self.column is None or self.template is not None:
            raise ValueError(f"a {self.kind} feature takes a column, not a template")
        numeric = [self.buckets, self.edges, self.width, self.standardize or None]
        if self.kind != "numeric" and any(v is not None for v in numeric):
            raise ValueError("buckets, edges, width and standardize apply to numeric features")
        if sum(v is not None for v in numeric) > 1:
            raise ValueError("give one of buckets, edges, width or standardize")
        if self.separator is not None and self.kind != "multi":
            raise ValueError("separator applies to multi features")
        if self.components is not None and self.kind != "text":
            raise ValueError("components applies to text features")
        if self.edges is not None and sorted(set(self.edges)) != self.edges:
            raise ValueError("edges must be strictly increasing")
        return self

    @property
    def name(self) -> str:
        return self.column if self.column is not None else f"text:{self.template}"

    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.column is not None else template_columns(self.template or "")


class TowerSpec(BaseModel):
    """One tower's input: the id column of its table and the declared features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    features: list[Feature] = []

    @model_validator(mode="after")
    def _unique(self) -> TowerSpec:
        names = [f.name for f in self.features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"feature {twice[0]!r} is declared twice")
        return self

    def columns(self) -> list[str]:
        """Every input column the features read."""
        return list(dict.fromkeys(c for f in self.features for c in f.columns()))

    def texts(self, frame: pd.DataFrame) -> list[str] | None:
        """The rows rendered through the first text feature's template (None without one)."""
        text = next((f for f in self.features if f.kind == "text"), None)
        return None if text is None else render(text, frame)

    def groups(self, frame: pd.DataFrame) -> list[list[str]] | None:
        """Each row's values of the first multi or categorical feature, as a list: what a
        per-group popularity groups by (None without such a feature)."""
        feature = next((f for f in self.features if f.kind in ("multi", "categorical")), None)
        if feature is None:
            return None
        if feature.kind == "multi":
            return _lists(feature, frame[feature.column])
        return [[v] if v is not None else [] for v in _labels(feature, frame[feature.column])]

    def validate_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A new entity's features checked against the declaration: no key it does not
        declare, each value of a type its kind takes. A declared column left out is sent as
        missing (None), so its feature takes its unknown bucket, as a blank cell does in
        training (`missing` names them)."""
        wanted = self.columns()
        unknown = sorted(set(row) - set(wanted) - {self.id})
        if unknown:
            raise FeatureError(unknown[0], f"not a feature of this model; it takes {wanted}")
        row = {**dict.fromkeys(wanted), **row}
        frame = pd.DataFrame([dict(row)])
        for feature in self.features:
            try:
                check_values(feature, frame)
            except FeatureError as exc:  # one row: no row number to name
                raise FeatureError(exc.column, exc.reason) from None
        return dict(row)

    def missing(self, row: Mapping[str, Any]) -> list[str]:
        """The declared columns a row leaves out or leaves blank: their unknown buckets."""
        return [c for c in self.columns() if _is_null(row.get(c))]


class Towers(BaseModel):
    """The declared features of both towers (recorded in the model file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: TowerSpec = TowerSpec(id="user_id")
    item: TowerSpec = TowerSpec(id="item_id")


# ------------------------------------------------------------------------- value parsing


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _labels(feature: Feature, values: pd.Series) -> list[str | None]:
    out: list[str | None] = []
    for row, value in values.items():
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            raise FeatureError(feature.name, f"a categorical value, got {value!r}", row)
        out.append(None if _is_null(value) else _label(value))
    return out


def check_category(feature: Feature, fitted: Fitted, value: Any) -> None:
    """Raise `FeatureError` for a request's categorical value that cannot be one of this
    feature's categories by its type: a bool, or a number where none was trained on."""
    if _is_null(value) or isinstance(value, str):
        return
    numbers = bool(fitted.vocab) and all(_is_number(label) for label in fitted.vocab)
    if isinstance(value, bool) or (isinstance(value, (int, float)) and not numbers):
        labels = sorted(fitted.vocab)
        known = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
        raise FeatureError(
            feature.name, f"a category as a string (trained on {known}), got {value!r}"
        )


def _is_number(label: str) -> bool:
    try:
        float(label)
    except ValueError:
        return False
    return True


def parse_numbers(feature: Feature, values: pd.Series) -> np.ndarray:
    """Floats, NaN for a null; anything else not a number is an error naming its row."""
    out = np.full(len(values), np.nan)
    for n, (row, value) in enumerate(values.items()):
        if _is_null(value):
            continue
        if isinstance(value, bool):
            raise FeatureError(feature.name, f"a number, got {value!r}", row)
        try:
            out[n] = float(value)
        except (TypeError, ValueError):
            raise FeatureError(feature.name, f"a number, got {value!r}", row) from None
        if not math.isfinite(out[n]):
            raise FeatureError(feature.name, f"a finite number, got {value!r}", row)
    return out


def _lists(feature: Feature, values: pd.Series) -> list[list[str]]:
    out: list[list[str]] = []
    for row, value in values.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            out.append([_label(v) for v in value if not _is_null(v)])
        elif _is_null(value):
            out.append([])
        elif isinstance(value, str) and feature.separator is not None:
            out.append([p.strip() for p in value.split(feature.separator) if p.strip()])
        else:
            reason = "a list" + (" or a string" if feature.separator is not None else "")
            hint = "" if feature.separator is not None else " (declare a separator for strings)"
            raise FeatureError(feature.name, f"{reason}, got {value!r}{hint}", row)
    return out


def _text_cell(value: Any) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(_label(v) for v in value if not _is_null(v))
    return "" if _is_null(value) else _label(value)


def render(feature: Feature, frame: pd.DataFrame) -> list[str]:
    """The text of each row: the template with each column's cell (a null is empty)."""
    columns = feature.columns()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureError(missing[0], f"named in the template {feature.template!r}, absent")
    cells = {c: frame[c].tolist() for c in columns}
    template = feature.template or ""
    return [
        template.format_map({c: _text_cell(cells[c][n]) for c in columns}).strip()
        for n in range(len(frame))
    ]


def check_values(feature: Feature, frame: pd.DataFrame) -> None:
    """Raise `FeatureError` (naming the row by the frame's index) for the first value of
    `feature` in `frame` that its kind cannot take."""
    if feature.kind == "text":
        render(feature, frame)
    elif feature.kind == "numeric":
        parse_numbers(feature, frame[feature.column])
    elif feature.kind == "multi":
        _lists(feature, frame[feature.column])
    else:
        _labels(feature, frame[feature.column])


def _numeric_labels(feature: Feature, x: np.ndarray) -> list[str | None]:
    assert feature.width is not None
    bins = np.floor(x / feature.width) * feature.width
    return [None if np.isnan(b) else _label(float(b)) for b in bins]


# ------------------------------------------------------------------------------ encoders


class Fitted(BaseModel):
    """What a feature learned from the training rows (JSON in the model file)."""

    vocab: dict[str, int] = {}
    edges: list[float] = []
    mean: float = 0.0
    std: float = 1.0
    text_dim: int = 0
    size: int = 0
    """Columns of the encoded block."""


def _vocab(values: Sequence[str | None]) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(sorted({v for v in values if v is not None}))}


def fit_feature(feature: Feature, frame: pd.DataFrame, text: np.ndarray | None) -> Fitted:
    """Learn the encoding of `feature` from the training rows in `frame`."""
    if feature.kind == "text":
        assert text is not None
        return Fitted(text_dim=text.shape[1])
    values = frame[feature.column]
    if feature.kind == "categorical":
        vocab = _vocab(_labels(feature, values))
        return Fitted(vocab=vocab, size=len(vocab) + 1)
    if feature.kind == "multi":
        vocab = _vocab([v for vs in _lists(feature, values) for v in vs])
        return Fitted(vocab=vocab, size=len(vocab) + 1)
    x = parse_numbers(feature, values)
    seen = x[~np.isnan(x)]
    if feature.width is not None:
        vocab = _vocab(_numeric_labels(feature, x))
        return Fitted(vocab=vocab, size=len(vocab) + 1)
    if feature.standardize:
        std = float(seen.std()) if len(seen) else 1.0
        return Fitted(mean=float(seen.mean()) if len(seen) else 0.0, std=std or 1.0, size=2)
    if feature.edges is not None:
        edges = list(feature.edges)
    else:
        qs = np.linspace(0, 1, (feature.buckets or 10) + 1)[1:-1]
        edges = np.unique(np.quantile(seen, qs)).tolist() if len(seen) else []
    return Fitted(edges=edges, size=len(edges) + 2)


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[index]


def encode_feature(
    feature: Feature, fitted: Fitted, frame: pd.DataFrame, text: np.ndarray | None
) -> np.ndarray:
    """The (rows, block width) float32 block of `feature` for `frame`; `text` is the
    projected text embedding for a text feature."""
    if feature.kind == "text":
        assert text is not None
        return text.astype(np.float32)
    if feature.column not in frame.columns:
        raise FeatureError(feature.column or "", "missing from the rows")
    values = frame[feature.column]
    if feature.kind == "multi":
        block = np.zeros((len(frame), fitted.size), dtype=np.float32)
        for n, labels in enumerate(_lists(feature, values)):
            for label in labels:
                block[n, fitted.vocab.get(label, 0)] = 1.0
        return block
    if feature.kind == "categorical":
        labels = _labels(feature, values)
        return _one_hot(
            np.array([fitted.vocab.get(v, 0) if v is not None else 0 for v in labels]), fitted.size
        )
    x = parse_numbers(feature, values)
    missing = np.isnan(x)
    if feature.width is not None:
        labels = _numeric_labels(feature, x)
        return _one_hot(
            np.array([fitted.vocab.get(v, 0) if v is not None else 0 for v in labels]), fitted.size
        )
    if feature.standardize:
        z = np.where(missing, 0.0, (x - fitted.mean) / fitted.std)
        return np.stack([z, missing.astype(np.float64)], axis=1).astype(np.float32)
    index = np.searchsorted(np.asarray(fitted.edges), np.where(missing, 0, x), side="right") + 1
    return _one_hot(np.where(missing, 0, index), fitted.size)
