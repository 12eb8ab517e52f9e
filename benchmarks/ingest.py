"""Ingestion overhead: pipeline wall time vs the embedder alone on the same rows, and the
re-ingest of an unchanged catalog vs the first run.

    .venv/bin/python benchmarks/ingest.py                    # MovieLens items + 2,000 images
    .venv/bin/python benchmarks/ingest.py --n-images 10000   # the issue's Fashion-MNIST size
    .venv/bin/python benchmarks/ingest.py --skip-images
    .venv/bin/python benchmarks/ingest.py --throughput 100000 --skip-text --skip-images

Targets (issue 3): pipeline <= 1.10x the embedder alone; unchanged re-ingest <= 5% of the
first run with zero embeddings. `--throughput N` (issue 27) times the pipeline itself: N
distinct rows (MovieLens items repeated with numbered titles) through `ingest()` with the
`hash:64` embedder, which costs ~2 µs a row, into a Flat FAISS store; target >= 60k rows/s
on 2 cores. It prints wall rows/s and the process's CPU time per row (the fairer figure on
a shared machine). Each case runs in a fresh cache and store under a temporary
folder; the model is loaded and warmed before any timing, so both sides time embedding, not
loading. The embedder alone embeds the rows the pipeline reads (texts rendered from the
same template; image files by path, decoded by the embedder).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from embedrec.common.settings import cache_root
from embedrec.data.datasets import export_catalog
from embedrec.embedders import get_embedder
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.rows import Row
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary


def _rows(source: Source) -> list[Row]:
    return [item for chunk in source.chunks(1024) for item in chunk if isinstance(item, Row)]


def case(
    label: str, source: Source, spec: str, inputs: list, work: Path, args: argparse.Namespace
) -> None:
    embedder = get_embedder(spec, device=args.device)
    embedder.embed(inputs[:8])  # load and warm the model outside every timing
    start = time.perf_counter()
    for i in range(0, len(inputs), args.batch_size):
        embedder.embed(inputs[i : i + args.batch_size])
    alone = time.perf_counter() - start

    os.environ["EMBEDREC_CACHE"] = str(work / f"cache-{label}")
    uri = f"faiss:{work / f'store-{label}'}?index={args.index}"
    options = IngestOptions(batch_size=args.batch_size)
    first = ingest(source, uri, spec, options, embedder=embedder)
    again = ingest(source, uri, spec, options, embedder=embedder)
    report(label, len(inputs), alone, first, again)


def throughput(n: int, work: Path, args: argparse.Namespace) -> None:
    """Ingest `n` distinct rows with the trivial embedder: the pipeline's own cost."""
    movies = export_catalog("movielens", work / "movies.csv", None, cache_root())
    with movies.open(newline="") as fh:
        base = list(csv.DictReader(fh))
    path = work / f"catalog-{n}.csv"
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(base[0]))
        out.writeheader()
        for i in range(n):
            row = dict(base[i % len(base)])
            out.writerow(row | {"item_id": str(i), "title": f"{row['title']} #{i}"})
    columns = ColumnMap(
        id="item_id",
        text="{title} ({year}): {genres}",
        metadata=parse_metadata_spec("title,year:int,genres:list"),
    )
    source = Source(path, columns)
    os.environ["EMBEDREC_CACHE"] = str(work / "cache-throughput")
    uri = f"faiss:{work / 'store-throughput'}?index=Flat"
    options = IngestOptions(batch_size=args.batch_size)
    cpu = time.process_time()
    first = ingest(source, uri, args.embedder, options)
    cpu, cpu_first = time.process_time(), time.process_time() - cpu
    again = ingest(source, uri, args.embedder, options)
    cpu_again = time.process_time() - cpu
    print(f"\nthroughput: {n:,} rows, embedder {args.embedder}, batch {args.batch_size}")
    for name, summary, spent in (("first run", first, cpu_first), ("unchanged", again, cpu_again)):
        print(
            f"  {name:<10} {summary.seconds:7.2f} s  {summary.rows_per_s:9,.0f} rows/s  "
            f"CPU {spent / n * 1e6:6.1f} µs/row  ({n / spent:,.0f} rows per CPU-s)"
        )
    print(f"  first run: embedded {first.embedded:,}, upserted {first.upserted:,}")
    print("  target: >= 60k rows/s on 2 cores")


def report(label: str, n: int, alone: float, first: IngestSummary, again: IngestSummary) -> None:
    print(f"\n{label}: {n:,} rows")
    print(f"  embedder alone           {alone:8.2f} s  ({n / alone:,.0f} rows/s)")
    print(
        f"  pipeline, first run      {first.seconds:8.2f} s  ({first.rows_per_s:,.0f} rows/s)"
        f"  ratio {first.seconds / alone:.3f}  (target <= 1.10)"
    )
    print(
        f"  unchanged re-ingest      {again.seconds:8.2f} s  "
        f"ratio to first {again.seconds / first.seconds:.4f}  (target <= 0.05), "
        f"embedded {again.embedded}, upserted {again.upserted}"
    )
    print(
        f"  first run: embedded {first.embedded:,}, cache hits {first.cache_hits:,}, "
        f"upserted {first.upserted:,}, rejected {first.rejected:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-movies", type=int, default=None, help="default: all 1,682 items")
    parser.add_argument("--n-images", type=int, default=2000, help="Fashion-MNIST images")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--index", default="HNSW32", help="FAISS index kind of the store")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="also time N rows with a trivial embedder (see above)",
    )
    parser.add_argument("--embedder", default="hash:64", help="the --throughput embedder")
    args = parser.parse_args()
    data_cache = cache_root()
    with tempfile.TemporaryDirectory(prefix="embedrec-bench-") as tmp:
        work = Path(tmp)
        if args.throughput:
            throughput(args.throughput, work, args)
        if not args.skip_text:
            path = export_catalog("movielens", work / "movies.csv", args.n_movies, data_cache)
            columns = ColumnMap(
                id="item_id",
                text="{title} ({year}): {genres}",
                metadata=parse_metadata_spec("title,year:int,genres:list"),
            )
            source = Source(path, columns)
            texts = [str(row.payload) for row in _rows(source)]
            case("movielens-text", source, "text", texts, work, args)
        if not args.skip_images:
            path = export_catalog("fashion-mnist", work / "fashion.csv", args.n_images, data_cache)
            columns = ColumnMap(
                id="product_id", image="image", metadata=parse_metadata_spec("category")
            )
            source = Source(path, columns)
            files = sorted((work / "fashion_images").glob("*.png"))
            case("fashion-mnist-images", source, "image", files, work, args)


if __name__ == "__main__":
    main()
