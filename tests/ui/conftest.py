"""Small real data for the web app's tests, written to disk as `make demo` would leave it.

The retrieval tests' data (300 MovieLens items with real text vectors, a two-tower model
trained on 100 users, 40 Fashion-MNIST images) go into FAISS stores, a saved model, users and
ratings CSV files and a serve config; catalog files and ingestion manifests (under a test
cache root) describe the stores, as `embedrec ingest` leaves them; a bench run and a
leaderboard are written as those commands write them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from embedrec.common.settings import CACHE_ENV
from embedrec.ingestion.manifest import IngestManifest, manifest_path
from embedrec.ui.settings import API_ENV, CONFIG_ENV, RESULTS_ENV
from tests.retrieval.conftest import Data, build_store, data  # noqa: F401

IMAGE_SIZE = 32


@dataclass
class UIFiles:
    root: Path
    config: Path
    cache: Path
    results: Path
    user_id: str
    item_id: str
    image_id: str


def _catalog(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _manifest(cache: Path, catalog: Path, uri: str, ids: list[str]) -> None:
    """What `embedrec ingest` records for (catalog, store), written under `cache`."""
    import os

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache)
    try:
        manifest = IngestManifest(manifest_path(catalog, uri))
    finally:
        if before is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = before
    manifest.commit(((i, "h") for i in ids), {"catalog": str(catalog), "store": uri})
    manifest.close()


def _bench(folder: Path) -> None:
    rows = []
    for store, params in (("faiss-hnsw32", (16, 64)), ("qdrant-edge", (32, 128))):
        for n, ef in enumerate(params):
            rows.append(
                {
                    "dataset": "synthetic-1k",
                    "dataset_id": "synthetic-1k",
                    "store": store,
                    "param": f"ef={ef}",
                    "params": {"ef": ef},
                    "recall": 0.9 + 0.06 * n,
                    "qps_1": 5000.0 / (n + 1),
                    "p50_ms": 0.2 * (n + 1),
                    "p95_ms": 0.4 * (n + 1),
                    "p99_ms": 0.6 * (n + 1),
                    "build_s": 0.5,
                    "disk_mb": 1.5,
                }
            )
    points = [{**r, "reached": True} for r in rows if r["recall"] >= 0.95]
    folder.mkdir(parents=True)
    body = {"meta": {"k": 10, "target_recall": 0.95}, "rows": rows, "operating_points": points}
    (folder / "results.json").write_text(json.dumps(body))


def _leaderboard(folder: Path) -> None:
    rows = [
        {"model": m, "scoring": "exact", "split": "stratified 75/25", "ndcg@10": v, "map": v / 3,
         "precision@10": v / 1.2, "recall@10": v / 2, "train_s": 1.0, "source": "embedrec"}
        for m, v in (("most-popular", 0.19), ("two-tower", 0.31))
    ]  # fmt: skip
    cold = [
        {"model": m, "recall@10": v, "cold_items": 30, "users": 25}
        for m, v in (("genre popularity", 0.05), ("two-tower hybrid (features only)", 0.09))
    ]
    board = {"dataset": "fixture", "k": 10, "protocol": "a test board", "rows": rows}
    folder.mkdir(parents=True)
    (folder / "leaderboard.json").write_text(json.dumps({**board, "cold_start": cold}))


@pytest.fixture(scope="session")
def ui_files(data: Data, tmp_path_factory: pytest.TempPathFactory) -> UIFiles:  # noqa: F811
    root = tmp_path_factory.mktemp("ui")
    cache = root / "cache"
    uris = {name: f"faiss:{root / name}?index=Flat" for name in ("text", "tt", "image")}
    for name, ids, vectors, meta in (
        ("text", data.item_ids, data.text_vectors, data.item_meta),
        ("tt", data.item_ids, data.item_vectors, data.item_meta),
        ("image", data.image_ids, data.image_vectors, data.image_meta),
    ):
        build_store(uris[name], ids, vectors, meta).close()
    model = data.model.save(root / "two_tower.pt")
    data.users.to_csv(root / "users.csv", index=False)
    data.ratings.to_csv(root / "ratings.csv", index=False)

    items = _catalog(
        root / "items.csv",
        [
            {"item_id": i, "title": m["title"]}
            for i, m in zip(data.item_ids, data.item_meta, strict=True)
        ],
    )
    (root / "images").mkdir()
    for image_id, pixels in zip(data.image_ids, data.images, strict=True):
        Image.fromarray(pixels, mode="L").save(root / "images" / f"{image_id}.png")
    images = _catalog(
        root / "products.csv",
        [{"product_id": i, "image": f"images/{i}.png"} for i in data.image_ids],
    )
    _manifest(cache, items, uris["text"], data.item_ids)
    _manifest(cache, items, uris["tt"], data.item_ids)
    _manifest(cache, images, uris["image"], data.image_ids)

    config = root / "serve.toml"
    config.write_text(
        f'[text]\nuri = "{uris["text"]}"\nembedder = "text"\n\n'
        f'[image]\nuri = "{uris["image"]}"\nembedder = "image?image_size={IMAGE_SIZE}"\n\n'
        f'[two_tower]\nuri = "{uris["tt"]}"\nmodel = "{model}"\n\n'
        f'[users]\nusers = "{root / "users.csv"}"\nratings = "{root / "ratings.csv"}"\n'
    )
    _bench(root / "results" / "bench")
    _leaderboard(root / "results" / "runs" / "ml")
    top_user = pd.read_csv(root / "ratings.csv", dtype=str)["user_id"].value_counts().index[0]
    return UIFiles(
        root, config, cache, root / "results", str(top_user), data.item_ids[0], data.image_ids[0]
    )


@pytest.fixture
def app_env(ui_files: UIFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[UIFiles]:
    """The environment `embedrec ui` gives the app, over the fixture's files."""
    monkeypatch.setenv(CACHE_ENV, str(ui_files.cache))
    monkeypatch.setenv(CONFIG_ENV, str(ui_files.config))
    monkeypatch.setenv(RESULTS_ENV, str(ui_files.results))
    monkeypatch.delenv(API_ENV, raising=False)
    yield ui_files
