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
on 2 cores. It runs `--rounds` rounds, each beside a baseline that reads the same file as
CSV and sha256-hashes each row, and prints medians: wall rows/s, the process's CPU time per
row (the fairer figure on a shared machine), the part of it spent in the store (opening,
counting, writing, flushing), the CPU of two stages timed alone on the same rows (reading
and building the rows, as many at a time as the pipeline reads; the embedder), and the
pipeline's first run as a multiple of the baseline (comparable across machine loads). Each
case runs in a fresh cache and store under a temporary folder; the model is loaded and
warmed before any timing, so both sides time embedding, not loading. The embedder alone
embeds the rows the pipeline reads (texts rendered from the same template; image files by
path, decoded by the embedder).

`--throughput 100000 --skip-text --skip-images` on a quiet machine (load average 1.3-1.9,
nothing else running), main at 57eff4b against the embedding cache's segment format, in
turns: one round each, twice, then three rounds each, twice (medians): main 33,743, 33,107,
30,776, 26,570 rows/s at 32.9-41.7 CPU us/row; the segments 39,320, 31,050, 33,303, 39,708
rows/s at 26.6-33.9 CPU us/row. Short of 60k: what is left is building rows (~7 us/row), the
store (~4), the manifest's SQLite row per entry (~3.3), threads and hand-offs (~3), the
hash embedder (~2), the cache (~2.2) and the two sha256 passes per row (~2.3).

Issue 27's four parts merged (reading and building a chunk of 4,096 rows at a time with
metadata as columns, the collector paused, one sha256 call a row; write-behind buffers as a
dict, cache lookups from memory; the manifest in segments; cheaper small upserts), beside
main at 43b5133 on a quiet machine (load average 0.6-1.1), `--rounds 3` each, in turns,
three times: main 31,709, 29,584, 40,858 rows/s at 33.1, 35.8, 25.7 CPU us/row; merged
63,527, 81,090, 57,783 rows/s at 17.2, 13.4, 18.8 (store 1.4-1.9, reading alone 5.9),
unchanged re-ingest 139-167k rows/s against main's 98-112k. Two `--rounds 5` runs right
after gave 54,187 and 50,947 rows/s (19.9 and 21.0 CPU us/row), and single ingests in fresh
processes (imports included) 44.7-69.4k against main's 28.2-35.3k: about 1.9x main, and
around 60k rather than reliably above it. What is left (py-spy --gil, per row): building
rows ~5 us, the hash embedder ~2, the content hash ~1.5, the cache key ~1, the metadata
JSON ~1.4, csv ~0.9, the store ~1.4.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedrec.common.settings import cache_root
from embedrec.data.datasets import export_catalog
from embedrec.embedders import get_embedder
from embedrec.ingestion import pipeline
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.pipeline import run as pipeline_run
from embedrec.ingestion.rows import Row
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary
from embedrec.stores import VectorStore


def _rows(source: Source, size: int = 1024) -> list[Row]:
    return [item for chunk in source.chunks(size) for item in chunk if isinstance(item, Row)]


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


def throughput_catalog(n: int, work: Path) -> Source:
    """`n` distinct rows: MovieLens items repeated with numbered ids and titles."""
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
    return Source(path, columns)


def stage_cpu(source: Source, spec: str, batch_size: int) -> tuple[float, float]:
    """CPU seconds to read the catalog into rows, and to embed their texts alone: the two
    stages of a first run that cost the same whatever the store or cache."""
    cpu = time.process_time()
    texts = [str(row.payload) for row in _rows(source, pipeline.read_size(batch_size))]
    read = time.process_time() - cpu
    embedder = get_embedder(spec)
    cpu = time.process_time()
    for i in range(0, len(texts), batch_size):
        embedder.embed(texts[i : i + batch_size])
    return read, time.process_time() - cpu


def read_and_hash(path: Path) -> int:
    """The floor under any ingest of the file: parse it as CSV and sha256 each row's cells."""
    rows = 0
    with path.open(newline="", encoding="utf-8") as fh:
        for cells in csv.reader(fh):
            hashlib.sha256("\0".join(cells).encode()).digest()
            rows += 1
    return rows - 1


class StoreClock:
    """Wall and thread CPU seconds spent in the store (opening it, counting, writing,
    flushing: on whichever thread does it), so that its share is shown apart from the
    pipeline's own."""

    HOOKS = ("upsert_checked", "flush", "count", "fetch")

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.depth = 0

    def timed(self, hook: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return hook(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:  # a hook inside another is counted once
                    self.wall += time.perf_counter() - wall
                    self.cpu += time.thread_time() - cpu

        return run

    @contextmanager
    def timing(self) -> Iterator[None]:
        """The pipeline's stores opened with their hooks timed (on the instance: a backend
        overrides some of them, as FAISS does `flush`)."""
        opener = pipeline_run.open_store

        def open_timed(*args: Any, **kwargs: Any) -> VectorStore:
            store = self.timed(opener)(*args, **kwargs)
            for name in self.HOOKS:
                setattr(store, name, self.timed(getattr(store, name)))
            return store

        pipeline_run.open_store = open_timed
        try:
            yield
        finally:
            pipeline_run.open_store = opener


def throughput(n: int, work: Path, args: argparse.Namespace) -> None:
    """Ingest `n` distinct rows with the trivial embedder, in rounds interleaved with the
    baseline (reading and hashing the same file): the pipeline's own cost, as a ratio."""
    source = throughput_catalog(n, work)
    uri_of = lambda r: f"faiss:{work / f'store-{r}'}?index=Flat"  # noqa: E731
    options = IngestOptions(batch_size=args.batch_size)
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        os.environ["EMBEDREC_CACHE"] = str(work / f"cache-throughput-{r}")
        wall, cpu = time.perf_counter(), time.process_time()
        assert read_and_hash(source.path) == n
        base_wall, base_cpu = time.perf_counter() - wall, time.process_time() - cpu
        clock = StoreClock()
        cpu = time.process_time()
        with clock.timing():
            first = ingest(source, uri_of(r), args.embedder, options)
        first_cpu, cpu = time.process_time() - cpu, time.process_time()
        again_clock = StoreClock()
        with again_clock.timing():
            again = ingest(source, uri_of(r), args.embedder, options)
        again_cpu = time.process_time() - cpu
        assert (first.upserted, again.unchanged) == (n, n), (first, again)
        read_cpu, embed_cpu = stage_cpu(source, args.embedder, args.batch_size)
        rounds.append(
            {
                "base_wall": base_wall, "base_cpu": base_cpu,
                "wall": first.seconds, "cpu": first_cpu,
                "store_wall": clock.wall, "store_cpu": clock.cpu,
                "again_wall": again.seconds, "again_cpu": again_cpu,
                "again_store_cpu": again_clock.cpu,
                "read_cpu": read_cpu, "embed_cpu": embed_cpu,
            }
        )  # fmt: skip
    print_throughput(n, rounds, args)


def print_throughput(n: int, rounds: list[dict[str, float]], args: argparse.Namespace) -> None:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    wall_ratio = statistics.median(r["wall"] / r["base_wall"] for r in rounds)
    cpu_ratio = statistics.median(r["cpu"] / r["base_cpu"] for r in rounds)

    def line(label: str, wall: str, cpu: str) -> None:
        rate = f"{n / med[wall]:9,.0f} rows/s" if wall else " " * 16
        print(f"  {label:<24} {rate}  CPU {med[cpu] / n * 1e6:6.1f} µs/row")

    print(
        f"\nthroughput: {n:,} rows, embedder {args.embedder}, batch {args.batch_size}, "
        f"{args.rounds} rounds (medians), load average {os.getloadavg()[0]:.1f}"
    )
    line("baseline (csv + sha256)", "base_wall", "base_cpu")
    line("first run", "wall", "cpu")
    line("  in the store", "", "store_cpu")
    print(f"  {'':<24} {'':16}  (open, count, upsert, flush: {med['store_wall']:.2f} s wall)")
    med["own_cpu"] = med["cpu"] - med["store_cpu"]
    line("  the pipeline's own", "", "own_cpu")
    line("  reading rows (alone)", "", "read_cpu")
    line("  embedding (alone)", "", "embed_cpu")
    line("unchanged re-ingest", "again_wall", "again_cpu")
    line("  in the store", "", "again_store_cpu")
    print(f"  first run / baseline     wall {wall_ratio:.2f}x  CPU {cpu_ratio:.2f}x")
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
    parser.add_argument("--rounds", type=int, default=3, help="--throughput rounds (medians)")
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
