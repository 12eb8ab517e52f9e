"""The torch parts on CUDA against CPU: the image embedder and two-tower training.

    python benchmarks/cuda_check.py [--epochs 10] [--images 2000] [--out DIR]

Needs a CUDA device (exits 2 without one). For each part it runs the same work on `cpu` and
on `cuda` and reports:

- image embedder (EfficientNet-Lite0, packaged weights) over Fashion-MNIST test images
  (`--fashion-test`), else random images: the smallest cosine between a vector
  from CPU and from CUDA, both unit-norm float32, and images/s on each;
- text embedder (all-MiniLM-L6-v2), where its packaged model is installed: the same;
- two-tower training on MovieLens 100k (ids and features, no title text), 75/25 stratified
  split: seconds to train, NDCG@10 and Recall@10 on the test quarter, and whether two CUDA
  runs with the same seed give identical item vectors (training is seeded and deterministic,
  with CUBLAS_WORKSPACE_CONFIG set by `deterministic`).

Prints one JSON object and, with --out, writes it to DIR/cuda_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def agreement(cpu: np.ndarray, cuda: np.ndarray) -> dict:
    cos = (cpu * cuda).sum(axis=1)
    return {
        "min_cosine": round(float(cos.min()), 6),
        "unit_norm": bool(np.allclose(np.linalg.norm(cuda, axis=1), 1, atol=1e-4)),
        "dtype": str(cuda.dtype),
    }


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def image_check(n: int, fashion_test: Path | None, devices: tuple[str, str]) -> dict:
    from embedrec.data.fashion_mnist import read_idx
    from embedrec.embedders.image import ImageEmbedder

    if fashion_test is not None:
        images = list(read_idx(fashion_test, "images", 10_000)[:n])
        source = f"fashion-mnist {fashion_test.name}"
    else:
        images = list(np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8))
        source = "random 28x28"
    out: dict = {"images": n, "source": source}
    vectors = {}
    for device in devices:
        embedder = ImageEmbedder(device=device, image_size=112)
        embedder.embed(images[:8])  # load the weights, warm up
        vectors[device], seconds = timed(lambda e=embedder: e.embed(images))
        out[f"{device}_images_per_s"] = round(n / seconds, 1)
    return out | agreement(vectors[devices[0]], vectors[devices[1]])


def text_check(devices: tuple[str, str]) -> dict:
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders.text import TextEmbedder

    titles = load_movielens().items["title"].astype(str).tolist()
    vectors, out = {}, {"texts": len(titles)}
    for device in devices:
        embedder = TextEmbedder(device=device)
        try:
            embedder.embed(titles[:8])
        except (OSError, ImportError, ValueError) as exc:
            return {"skipped": f"the text model cannot load here: {exc}"}
        vectors[device], seconds = timed(lambda e=embedder: e.embed(titles))
        out[f"{device}_texts_per_s"] = round(len(titles) / seconds, 1)
    return out | agreement(vectors[devices[0]], vectors[devices[1]])


def two_tower_check(epochs: int, devices: tuple[str, str]) -> dict:
    from embedrec.data.movielens import load_movielens
    from embedrec.embedders.two_tower import TwoTowerConfig
    from embedrec.eval.models.baselines import Catalog, TwoTower
    from embedrec.eval.models.config import load_experiment_config
    from embedrec.eval.models.leaderboard import score_model
    from embedrec.ranking.splits import stratified_split

    ml = load_movielens()
    train, test = stratified_split(ml.ratings, 0.75, filter_by="item", seed=42)
    towers = load_experiment_config(ROOT / "configs" / "two_tower.toml").data.towers()
    catalog = Catalog(ml.users, ml.items, train, ml.items, towers)
    out: dict = {"epochs": epochs, "train_ratings": len(train), "test_ratings": len(test)}
    vectors = []
    for device in (devices[0], devices[1], devices[1]):
        config = TwoTowerConfig(text=False, epochs=epochs, patience=epochs, device=device)
        model = TwoTower(f"two-tower-{device}", config, progress=False)
        model.fit(catalog)
        metrics = score_model(model, catalog, test, k=10)
        assert model.model is not None
        vectors.append(model.model.item_vectors(ml.items))
        if f"{device}_train_s" not in out:
            out[f"{device}_train_s"] = round(model.train_seconds, 2)
            out[f"{device}_ndcg@10"] = round(metrics["ndcg@10"], 4)
            out[f"{device}_recall@10"] = round(metrics["recall@10"], 4)
    out[f"{devices[1]}_runs_identical"] = bool(np.array_equal(vectors[1], vectors[2]))
    out[f"{devices[1]}_vectors_finite"] = bool(np.isfinite(vectors[1]).all())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--fashion-test", type=Path, help="t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--dry-run", action="store_true", help="cpu against cpu: check this script without CUDA"
    )
    args = parser.parse_args()
    devices = ("cpu", "cpu") if args.dry_run else ("cpu", "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    report = {
        "device": torch.cuda.get_device_name(0) if devices[1] == "cuda" else "cpu",
        "torch": torch.__version__,
        "image": image_check(args.images, args.fashion_test, devices),
        "text": text_check(devices),
        "two_tower": two_tower_check(args.epochs, devices),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cuda_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
