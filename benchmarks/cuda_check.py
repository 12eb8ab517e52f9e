"""The torch parts on CUDA against CPU: the embedders, their batch size, the ingest pipeline
with MiniLM, and two-tower training.

    python benchmarks/cuda_check.py [--epochs 10] [--images 2000] [--out DIR]
    python benchmarks/cuda_check.py --only image,text,ingest   # no two-tower training
    python benchmarks/cuda_check.py --dry-run --images 64 --texts 256 --ingest-rows 300 \
        --rounds 1 --only image,text,ingest                     # this script, on the CPU

Needs a CUDA device (exits 2 without one). For each part it runs the same work on `cpu` and
on `cuda` and reports:

- image embedder (EfficientNet-Lite0, packaged weights) over Fashion-MNIST test images
  (`--fashion-test`), else random images: the smallest cosine between a vector
  from CPU and from CUDA, both unit-norm float32, and images/s on each; then on CUDA the
  batch size `auto` chose (embedrec/embedders/batching.py) and images/s at the CPU default
  (32) and at the chosen size, in `--rounds` interleaved rounds (medians), with their ratio;
- text embedder (all-MiniLM-L6-v2), where its packaged model is installed: the same over
  MovieLens titles, and the batch sizing over `--texts` titles (numbered repeats; default
  64 on a CPU);
- ingest (`--ingest-rows` distinct MovieLens rows, benchmarks/ingest.py's catalog, into a
  Flat FAISS store, each run in a fresh cache and store, interleaved rounds, medians): rows/s
  with `hash:64` (the pipeline alone) and with MiniLM on CUDA at [ingest] batch_size 256 and
  at the chosen size, against MiniLM alone on the same texts; the ratios say whether the
  pipeline or the model sets the pace;
- two-tower training on MovieLens 100k (ids and features, no title text), 75/25 stratified
  split: seconds to train, NDCG@10 and Recall@10 on the test quarter, and whether two CUDA
  runs with the same seed give identical item vectors (training is seeded and deterministic,
  with CUBLAS_WORKSPACE_CONFIG set by `deterministic`).

Prints one JSON object and, with --out, writes it to DIR/cuda_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def image_check(args: argparse.Namespace, devices: tuple[str, str]) -> dict:
    from embedrec.data.fashion_mnist import read_idx
    from embedrec.embedders.image import ImageEmbedder

    n = args.images
    if args.fashion_test is not None:
        images = list(read_idx(args.fashion_test, "images", 10_000)[:n])
        source = f"fashion-mnist {args.fashion_test.name}"
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
    make = lambda size: ImageEmbedder(device=devices[1], image_size=112, batch_size=size)  # noqa: E731
    out["batch_size"] = sizing(make, images, devices[1], args.rounds, "images")
    return out | agreement(vectors[devices[0]], vectors[devices[1]])


def text_check(args: argparse.Namespace, devices: tuple[str, str]) -> dict:
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
    texts = [f"{titles[i % len(titles)]} #{i}" for i in range(args.texts)]
    make = lambda size: TextEmbedder(device=devices[1], batch_size=size)  # noqa: E731
    out["batch_size"] = sizing(make, texts, devices[1], args.rounds, "texts")
    return out | agreement(vectors[devices[0]], vectors[devices[1]])


def sizing(make: Callable[[Any], Any], inputs: list, device: str, rounds: int, unit: str) -> dict:
    """On `device`: the size `auto` chose, and items/s at the CPU default and at it, in
    interleaved rounds (medians); the first auto call (which probes) is timed apart."""
    auto = make("auto")
    default = auto.sizer.default
    fixed = make(default)
    fixed.embed(inputs[:8])  # load and warm up
    auto.embed(inputs[:8])  # load (no probe: 8 items are fewer than the default)
    _, probing = timed(lambda: auto.embed(inputs))
    seconds: dict[str, list[float]] = {"default": [], "chosen": []}
    vectors = {}
    for r in range(rounds):
        pair = [("default", fixed), ("chosen", auto)]
        for label, embedder in pair if r % 2 == 0 else pair[::-1]:
            vectors[label], took = timed(lambda e=embedder: e.embed(inputs))
            seconds[label].append(took)
    rate = {k: len(inputs) / statistics.median(v) for k, v in seconds.items()}
    return {
        unit: len(inputs),
        "rounds": rounds,
        "default": default,
        "chosen": auto.sizer.size(device),
        "first_auto_call_s (with the probe)": round(probing, 3),
        f"default_{unit}_per_s": round(rate["default"], 1),
        f"chosen_{unit}_per_s": round(rate["chosen"], 1),
        "chosen_over_default": round(rate["chosen"] / rate["default"], 3),
        "min_cosine_chosen_vs_default": round(
            float((vectors["chosen"] * vectors["default"]).sum(axis=1).min()), 6
        ),
    }


def ingest_check(args: argparse.Namespace, device: str) -> dict:
    """`ingest()` rows/s with hash:64 and with MiniLM on `device` (at [ingest] batch_size
    256 and at the chosen model batch), against MiniLM alone on the same texts."""
    from ingest import throughput_catalog  # benchmarks/ingest.py: the same catalog

    from embedrec.embedders.text import TextEmbedder
    from embedrec.ingestion.pipeline import ingest
    from embedrec.ingestion.rows import Row
    from embedrec.ingestion.summary import IngestOptions

    n = args.ingest_rows
    with tempfile.TemporaryDirectory(prefix="embedrec-cuda-") as tmp:
        work = Path(tmp)
        source = throughput_catalog(n, work)
        texts = [str(r.payload) for c in source.chunks(1024) for r in c if isinstance(r, Row)]
        text = TextEmbedder(device=device)
        text.embed(texts)  # loads the model; probes on CUDA
        chosen = text.sizer.size(device)
        cases = {"hash:64 @256": ("hash:64", 256, None), "text @256": ("text", 256, text)}
        cases[f"text @{chosen}"] = ("text", chosen, text)
        seconds: dict[str, list[float]] = {label: [] for label in [*cases, "text alone"]}
        for r in range(args.rounds):
            seconds["text alone"].append(timed(lambda: text.embed(texts))[1])
            for i, (label, (spec, batch, embedder)) in enumerate(cases.items()):
                os.environ["EMBEDREC_CACHE"] = str(work / f"cache-{r}-{i}")
                uri = f"faiss:{work / f'store-{r}-{i}'}?index=Flat"
                options = IngestOptions(batch_size=batch)
                summary = ingest(source, uri, spec, options, embedder=embedder)
                assert summary.upserted == n, summary
                seconds[label].append(summary.seconds)
    rate = {k: n / statistics.median(v) for k, v in seconds.items()}
    out: dict = {"rows": n, "rounds": args.rounds, "chosen_batch": chosen}
    out |= {f"{label} rows_per_s": round(value, 1) for label, value in rate.items()}
    for label in cases:
        if label.startswith("text"):
            out[f"{label} / text alone"] = round(rate[label] / rate["text alone"], 3)
            out[f"{label} / hash:64 @256"] = round(rate[label] / rate["hash:64 @256"], 3)
    return out


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


PARTS = ("image", "text", "ingest", "two_tower")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--texts", type=int, default=20_000, help="texts for the batch sizing")
    parser.add_argument("--ingest-rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--fashion-test", type=Path, help="t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--dry-run", action="store_true", help="cpu against cpu: check this script without CUDA"
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    devices = ("cpu", "cpu") if args.dry_run else ("cpu", "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "cuda_check: no CUDA device (torch.cuda.is_available() is False); "
            "--dry-run checks this script on the CPU",
            file=sys.stderr,
        )
        return 2
    checks: dict[str, Callable[[], dict]] = {
        "image": lambda: image_check(args, devices),
        "text": lambda: text_check(args, devices),
        "ingest": lambda: ingest_check(args, devices[1]),
        "two_tower": lambda: two_tower_check(args.epochs, devices),
    }
    report = {
        "device": torch.cuda.get_device_name(0) if devices[1] == "cuda" else "cpu",
        "torch": torch.__version__,
        "load_average": round(os.getloadavg()[0], 1),
    }
    report |= {part: checks[part]() for part in PARTS if part in parts}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cuda_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
