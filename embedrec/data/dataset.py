"""A dataset described by a `[data]` config section, read and checked, in canonical columns.

Interactions come out as `user_id`, `item_id` (strings) and, where the config names them,
`rating`, `timestamp` (integer seconds since the epoch, from numbers or ISO 8601 strings)
and `weight`; the item catalog and the user table have their id column renamed to `item_id`
/ `user_id` and keep their other columns, with each numeric feature's column parsed into
floats (CSV and TSV cells are read as text). Every problem names the file, the row (as an
editor shows it: CSV/TSV lines count the header as line 1, JSONL lines, Parquet 1-based
rows) and the column, and is raised before any training starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.common.config import named_by
from embedrec.common.settings import cache_root
from embedrec.data import tables
from embedrec.data.config import DataSection, EntityTable, InteractionsTable, Table
from embedrec.data.datasets import load
from embedrec.data.tables import CatalogError, detect_format
from embedrec.embedders.two_tower import FeatureError, Towers
from embedrec.embedders.two_tower.features import Feature, check_values, parse_numbers

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    towers: Towers
    notes: list[str] = field(default_factory=list)
    """What loading dropped or changed, one line each (also logged)."""

    @property
    def ratings(self) -> pd.DataFrame:
        """The interactions, under the name the harness has always used."""
        return self.interactions


# ------------------------------------------------------------------------------ reading


def _folder(config: DataSection) -> Path | None:
    """For a packaged dataset, the folder its tables are exported to (once, atomically)."""
    if config.dataset is None:
        return None
    folder = (config.cache or cache_root()) / "tables" / config.dataset
    if folder.is_dir():
        return folder
    data = load(config.dataset, config.cache)
    frames = {
        f.name: getattr(data, f.name)
        for f in dataclasses.fields(data)
        if isinstance(getattr(data, f.name), pd.DataFrame)
    }
    if not frames:
        raise ValueError(f"packaged dataset {config.dataset!r} has no tables to train on")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for name, frame in frames.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # lost a race to another writer: theirs is as good
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_table(table: Table, folder: Path | None, columns: list[str]) -> pd.DataFrame:
    """The file's rows indexed by their row number; `columns` must exist."""
    path = table.path if folder is None or table.path.is_absolute() else folder / table.path
    if not path.is_file():
        raise CatalogError(str(path), f"no such file{named_by(table.path)}")
    fmt = table.format or detect_format(path)
    frame = tables.read_table(path, fmt, delimiter=table.delimiter)
    first = 2 if fmt in ("csv", "tsv") else 1  # CSV/TSV: the header is line 1
    if len(frame) == 0:
        raise CatalogError(str(path), "the file has no rows", row=first)
    frame.index = pd.RangeIndex(first, first + len(frame))
    frame.attrs["path"] = str(path)
    for name in columns:
        if name not in frame.columns:
            have = ", ".join(map(repr, frame.columns))
            raise CatalogError(str(path), f"no column {name!r}; the file has: {have}", row=1,
                               field=name)  # fmt: skip
    return frame


def _fail(frame: pd.DataFrame, column: str, rows: pd.Index, reason: str) -> CatalogError:
    more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
    return CatalogError(frame.attrs["path"], reason + more, row=int(rows[0]), field=column)


def _ids(frame: pd.DataFrame, column: str) -> pd.Series:
    values = frame[column]
    text = values.map(lambda v: "" if v is None or pd.isna(v) else str(v).strip())
    blank = text == ""
    if blank.any():
        raise _fail(frame, column, frame.index[blank.to_numpy()], "the id is missing")
    return text.astype(str)


def _numbers(frame: pd.DataFrame, column: str, what: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.astype(float))
    if bad.any():
        rows = frame.index[bad.to_numpy()]
        raise _fail(frame, column, rows, f"{what} must be a number, got {frame[column][rows[0]]!r}")
    return values.astype(np.float64)


def _seconds(frame: pd.DataFrame, column: str) -> pd.Series:
    """Integer seconds since the epoch, from numbers or ISO 8601 strings (naive ones UTC)."""
    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.astype(np.float64).astype(np.int64)
    stamps = pd.to_datetime(values.astype(str), utc=True, format="ISO8601", errors="coerce")
    bad = stamps.isna() & numbers.isna()
    if bad.any():
        rows = frame.index[bad.to_numpy()]
        got = values[rows[0]]
        raise _fail(frame, column, rows, f"a timestamp must be a number or ISO 8601, got {got!r}")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.where(numbers.isna(), numbers).astype(np.int64)


# ------------------------------------------------------------------------------ tables


def _interactions(cfg: InteractionsTable, folder: Path | None, notes: list[str]) -> pd.DataFrame:
    named = [cfg.user, cfg.item, cfg.rating, cfg.timestamp, cfg.weight]
    frame = read_table(cfg, folder, [c for c in named if c is not None])
    out = pd.DataFrame(
        {"user_id": _ids(frame, cfg.user), "item_id": _ids(frame, cfg.item)}, index=frame.index
    )
    if cfg.rating is not None:
        out["rating"] = _numbers(frame, cfg.rating, "a rating")
    if cfg.timestamp is not None:
        out["timestamp"] = _seconds(frame, cfg.timestamp)
    if cfg.weight is not None:
        out["weight"] = _numbers(frame, cfg.weight, "a weight")
        negative = out["weight"] < 0
        if negative.any():
            raise _fail(frame, cfg.weight, out.index[negative.to_numpy()], "a weight is >= 0")
    if cfg.min_rating is not None:
        keep = out["rating"] >= cfg.min_rating
        if not keep.all():
            notes.append(
                f"{frame.attrs['path']}: {int((~keep).sum())} interactions rated below "
                f"{cfg.min_rating:g} are not positives and were left out"
            )
        out = out[keep]
    out.attrs["path"] = frame.attrs["path"]
    return out


def _typed_features(frame: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Every feature value checked; numeric columns parsed into floats (NaN for a null), so
    a CSV or TSV cell, read as text, is a number from here on as a Parquet one is."""
    out = frame.copy()
    for feature in features:
        try:
            if feature.kind == "numeric":
                out[feature.column] = parse_numbers(feature, frame[feature.column])
            else:
                check_values(feature, frame)
        except FeatureError as exc:
            field = exc.column
            raise CatalogError(frame.attrs["path"], exc.reason, row=exc.row, field=field) from None
    return out


def _entities(cfg: EntityTable, folder: Path | None, canonical: str) -> pd.DataFrame:
    columns = list(dict.fromkeys([cfg.id, *(c for f in cfg.features for c in f.columns())]))
    frame = read_table(cfg, folder, columns)
    if canonical in frame.columns and canonical != cfg.id:
        raise CatalogError(
            frame.attrs["path"],
            f"the id column is {cfg.id!r}, and another column is called {canonical!r}",
            field=canonical,
        )
    ids = _ids(frame, cfg.id)
    twice = ids.duplicated()
    if twice.any():
        raise _fail(
            frame, cfg.id, frame.index[twice.to_numpy()], f"duplicate id {ids[twice].iloc[0]!r}"
        )
    out = _typed_features(frame, cfg.features).assign(**{cfg.id: ids})
    out = out.rename(columns={cfg.id: canonical})
    out.attrs["path"] = frame.attrs["path"]
    return out


def _known(
    interactions: pd.DataFrame, column: str, table: pd.DataFrame, canonical: str, what: str
) -> None:
    """Interactions naming an id the table lacks: an error that counts them."""
    unknown = ~interactions[canonical].isin(set(table[canonical]))
    if unknown.any():
        rows = interactions.index[unknown.to_numpy()]
        first = interactions.loc[rows[0], canonical]
        raise CatalogError(
            interactions.attrs["path"],
            f"{int(unknown.sum())} interactions name {what} missing from {table.attrs['path']}, "
            f"the first {first!r}",
            row=int(rows[0]),
            field=column,
        )


def load_dataset(config: DataSection) -> Dataset:
    """Read and check the interactions, the item catalog and the user table of `config`."""
    folder = _folder(config)
    notes: list[str] = []
    interactions = _interactions(config.interactions, folder, notes)
    items = _entities(config.items, folder, "item_id")
    _known(interactions, config.interactions.item, items, "item_id", "items")
    if config.users is not None:
        users = _entities(config.users, folder, "user_id")
        _known(interactions, config.interactions.user, users, "user_id", "users")
    else:
        users = pd.DataFrame({"user_id": pd.unique(interactions["user_id"])})
    if config.max_users is not None:
        users = users.head(config.max_users)
        interactions = interactions[interactions["user_id"].isin(set(users["user_id"]))]
    for note in notes:
        log.warning("%s", note)
    return Dataset(
        interactions=interactions.reset_index(drop=True),
        items=items.reset_index(drop=True),
        users=users.reset_index(drop=True),
        towers=config.towers(),
        notes=notes,
    )
