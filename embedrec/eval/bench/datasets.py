"""The bench's datasets: base and query vectors prepared once on disk with exact ground truth.

`prepare` writes DIR/data/ID/*.npy (base, queries, ground-truth rows and distances) under an
id that hashes the dataset's config and k, so a rerun reuses them; PCA datasets also keep
their source vectors, in which ground truth and recall are computed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.data.config import load_data_section
from embedrec.data.dataset import Dataset, load_dataset
from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.data.fetching import DatasetUnavailable
from embedrec.embedders.cache import EmbeddingCache
from embedrec.embedders.cached import embed_cached
from embedrec.eval.bench.config import (
    BenchConfig,
    CatalogTextDataset,
    DatasetConfig,
    FashionDataset,
    PCADataset,
    SyntheticDataset,
    TwoTowerDataset,
)
from embedrec.stores.recall import exact as ann


class Skip(Exception):
    """A dataset or store that cannot run here; the message says why."""


@dataclass(frozen=True)
class Prepared:
    """A dataset on disk (DIR/data/ID/*.npy) with its exact ground truth."""

    id: str
    name: str
    kind: str
    metric: str
    n: int
    nq: int
    dim: int
    k: int
    folder: str
    scale_group: str | None = None
    source: str | None = None
    full_dim: int | None = None
    """PCA datasets: the source and its dimension, in which ground truth and recall are
    computed."""


def _synthetic(d: SyntheticDataset, n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(d.seed)
    centres = rng.standard_normal((d.clusters, d.dim)).astype(np.float32)

    def draw(count: int, stream: int) -> np.ndarray:
        out = np.empty((count, d.dim), np.float32)
        r = np.random.default_rng([d.seed, stream])
        for s in range(0, count, 100_000):
            m = min(100_000, count - s)
            noise = r.standard_normal((m, d.dim), dtype=np.float32)
            out[s : s + m] = centres[r.integers(0, d.clusters, m)] + d.spread * noise
        return out

    return draw(n, 1), draw(nq, 2)


def _catalog(path: Path) -> Dataset:
    return load_dataset(load_data_section(path))


def _text_value(value: object) -> object:
    """A column value as a template shows it: a list joined with "|", a missing value as
    nothing, a whole float as an integer (a year read as float beside missing ones)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "|".join(map(str, value))
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _catalog_text(d: CatalogTextDataset) -> tuple[np.ndarray, np.ndarray]:
    from embedrec.embedders.text import TextEmbedder  # torch loads for embedding datasets only

    items = _catalog(d.data).items
    try:
        texts = [
            d.template.format(**{k: _text_value(v) for k, v in row.items()})
            for row in items.to_dict("records")
        ]
    except (KeyError, IndexError) as exc:
        raise ValueError(
            f"dataset {d.name!r}: template {d.template!r} names {exc}, which is not a column "
            f"of the items ({', '.join(map(str, items.columns))})"
        ) from None
    with EmbeddingCache() as cache:
        vectors, _ = embed_cached(TextEmbedder(), texts, cache)
    order = np.random.default_rng(d.seed).permutation(len(vectors))
    n_queries = max(1, round(d.query_fraction * len(vectors)))
    return vectors[order[n_queries:]], vectors[order[:n_queries]]


def _two_tower(d: TwoTowerDataset) -> tuple[np.ndarray, np.ndarray]:
    if not d.model.is_file():
        raise Skip(f"no two-tower model at {d.model} (train one with `embedrec train CONFIG`)")
    from embedrec.embedders.two_tower import TwoTowerModel  # torch: for this dataset only

    data = _catalog(d.data)
    model = TwoTowerModel.load(d.model)
    return model.item_vectors(data.items), model.user_vectors(data.users)


def _raw_vectors(d: DatasetConfig, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(base, queries, metric) before the n / queries caps; PCA datasets reduce later."""
    if isinstance(d, FashionDataset):
        try:
            fm = load_fashion_mnist()
        except DatasetUnavailable as exc:
            raise Skip(str(exc)) from None
        base = fm.train_images.reshape(len(fm.train_images), -1).astype(np.float32)
        return base, fm.test_images.reshape(len(fm.test_images), -1).astype(np.float32), d.metric
    if isinstance(d, CatalogTextDataset):
        return (*_catalog_text(d), d.metric)
    if isinstance(d, TwoTowerDataset):
        return (*_two_tower(d), d.metric)
    if isinstance(d, SyntheticDataset):
        return (*_synthetic(d, d.n, d.queries), d.metric)
    if isinstance(d, PCADataset):
        return _raw_vectors(cfg.dataset(d.source), cfg)
    raise TypeError(f"unknown dataset kind {type(d).__name__}")


def _dataset_id(d: DatasetConfig, cfg: BenchConfig, k: int) -> str:
    parts = [d.model_dump(mode="json"), k]
    if isinstance(d, PCADataset):
        parts.append(cfg.dataset(d.source).model_dump(mode="json"))
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]
    return f"{d.name}-{digest}"


def prepare(d: DatasetConfig, cfg: BenchConfig, root: Path) -> Prepared:
    """Load (or reuse from `root`) the dataset's vectors and exact ground truth."""
    k = cfg.run.k
    did = _dataset_id(d, cfg, k)
    folder = root / did
    meta = folder / "meta.json"
    if meta.is_file():
        return Prepared(**json.loads(meta.read_text()))
    base, queries, metric = _raw_vectors(d, cfg)
    base, queries = base[: d.n], queries[: d.queries]
    if len(base) < k:
        raise Skip(f"dataset {d.name!r} has {len(base)} base vectors, fewer than k={k}")
    tmp = root / f".{did}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    source, full_dim = None, None
    if isinstance(d, PCADataset):
        source = d.source
        full_dim = base.shape[1]
        np.save(tmp / "eval_base.npy", base)
        np.save(tmp / "eval_queries.npy", queries)
        gt_dist, gt_rows = ann.exact_knn(base, queries, k, metric)
        base, queries = ann.pca_reduce(base, queries, d.dim)
    else:
        gt_dist, gt_rows = ann.exact_knn(base, queries, k, metric)
    np.save(tmp / "base.npy", np.ascontiguousarray(base, dtype=np.float32))
    np.save(tmp / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    np.save(tmp / "gt_rows.npy", gt_rows)
    np.save(tmp / "gt_dist.npy", gt_dist)
    prepared = Prepared(
        id=did, name=d.name, kind=d.kind, metric=metric, n=len(base), nq=len(queries),
        dim=base.shape[1], k=k, folder=str(folder), scale_group=d.scale_group, source=source,
        full_dim=full_dim,
    )  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(asdict(prepared), indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return prepared
