"""`make demo`: the main job end to end on the embedded FAISS default, offline.

    python -m embedrec.demo [--workdir ./data/demo]

1. Fashion-MNIST pixels into a FAISS HNSW store: similar products, a filtered query, and
   recall against exact search.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from embedrec import open_store

console = Console(width=120)


def pixels_store(workdir: Path) -> None:
    from embedrec.ingestion.datasets import load_fashion_mnist

    console.rule("[bold]1. Fashion-MNIST pixels in FAISS HNSW32")
    fm = load_fashion_mnist()
    base = fm.train_images.reshape(len(fm.train_images), -1).astype(np.float32)
    ids = fm.product_ids("train")
    metadata = [{"category": fm.classes[label]} for label in fm.train_labels.tolist()]
    uri = f"faiss:{workdir / 'fashion-pixels'}?index=HNSW32&metric=l2"
    store = open_store(uri, dim=base.shape[1], metric="l2")
    if store.count() != len(ids):
        start = time.perf_counter()
        with console.status(f"indexing {len(ids):,} images into {uri}"):
            for lo in range(0, len(ids), 10_000):
                hi = lo + 10_000
                store.upsert(ids[lo:hi], base[lo:hi], metadata[lo:hi])
            store.flush()
        console.print(f"indexed {store.count():,} products in {time.perf_counter() - start:.1f} s")
    else:
        console.print(f"{uri} already holds {store.count():,} products")

    queries = fm.test_images.reshape(len(fm.test_images), -1).astype(np.float32)
    label = fm.classes[int(fm.test_labels[0])]
    table = Table(title=f"products most similar to test image 0 (a {label})")
    for col in ("rank", "product", "category", "score"):
        table.add_column(col)
    for rank, hit in enumerate(store.search(queries[0], 5)[0], 1):
        table.add_row(str(rank), hit.id, str(hit.metadata["category"]), f"{hit.score:.0f}")
    console.print(table)

    flt = {"category": {"$in": ["Sneaker", "Sandal"]}}
    hits = store.search(queries[0], 5, filter=flt)[0]
    console.print(f"filter {flt}: " + ", ".join(f"{h.id} ({h.metadata['category']})" for h in hits))

    exact = open_store("faiss:?index=Flat", dim=base.shape[1], metric="l2")
    exact.upsert(ids, base)
    sample = queries[:1000]
    start = time.perf_counter()
    approx = store.search(sample, 10)
    hnsw_s = time.perf_counter() - start
    start = time.perf_counter()
    truth = exact.search(sample, 10)
    exact_s = time.perf_counter() - start
    recall = np.mean(
        [
            len({h.id for h in a} & {h.id for h in t}) / 10
            for a, t in zip(approx, truth, strict=True)
        ]
    )
    console.print(
        f"recall@10 of HNSW32 (ef={store.ef}) against exact search on 1,000 queries: "
        f"[bold]{recall:.4f}[/]; {1000 / hnsw_s:,.0f} queries/s vs {1000 / exact_s:,.0f} exact"
    )
    store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/demo"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    pixels_store(args.workdir)


if __name__ == "__main__":
    main()
