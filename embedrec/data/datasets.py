"""The packaged datasets (named in registry.py) loaded, and exported as catalog files for
`ingest`.

Each loader tries the canonical source first, then offline fallbacks (see
docs/architecture.md, "Data that works offline"), and caches what it fetched under
`embedrec.common.settings.cache_root()`; each dataset's loader and type live in its own module
(`movielens.py`, `fashion_mnist.py`).
"""

from __future__ import annotations

import importlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.data.fashion_mnist import FashionMNIST
from embedrec.data.movielens import MovieLens
from embedrec.data.registry import DATASETS, known_dataset

__all__ = ["export_catalog", "load"]


def load(name: str, cache: Path | None = None) -> MovieLens | FashionMNIST:
    """Load a packaged dataset by name (fetching it into the cache if needed)."""
    module, function = DATASETS[known_dataset(name)].loader.split(":")
    return getattr(importlib.import_module(module), function)(cache)


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
    from PIL import Image  # Pillow comes with the image extra; MovieLens exports need none

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
