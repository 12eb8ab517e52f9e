"""Ray Data ingest against in-process ingest: the wall time of `ingest --engine ray` over
`--engine local` on the same catalog, and whether both built the same store.

    .venv/bin/python benchmarks/ray_ingest.py                     # 100k rows hash:64, 1,000 text
    .venv/bin/python benchmarks/ray_ingest.py --rows 20000 --text-rows 0 --rounds 3

Target (issue 27): <= 1.3x in-process on a local Ray with 2 CPUs, 100k rows, `hash:64`. Each
round ingests the catalog with each engine (alternating which goes first) into a fresh
store, manifest and embedding cache, and prints `IngestSummary.seconds` (the ingest's own
wall time) for both; the figure is the median of the rounds' ratios, with the load average
of each round. The Ray cluster is started, and its workers warmed (embedrec imported, the
model loaded) by a small ingest, before any round: those one-off costs are printed apart.
The text case runs the packaged MiniLM on CPUs, the in-process embedder loaded beforehand;
each Ray worker runs torch on one thread (Ray sets OMP_NUM_THREADS=1 for a one-CPU task),
the in-process model on torch's default (`--local-threads` sets it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from embedrec.embedders import EmbeddingCache, get_embedder
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.distributed.engine import cluster
from embedrec.ingestion.distributed.stage import RayStage
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary
from embedrec.stores import open_store

WORDS = [
    "red",
    "blue",
    "night",
    "city",
    "river",
    "love",
    "war",
    "star",
    "dark",
    "light",
    "last",
    "first",
    "song",
    "road",
    "home",
]
GENRES = ["Drama", "Comedy", "Action", "Horror", "Romance", "Thriller"]
COLUMNS = ColumnMap(
    id="item_id",
    text="{title} ({year}): {genres}",
    metadata=parse_metadata_spec("title,year:int,genres:list"),
)


def write_catalog(path: Path, n: int) -> Source:
    """`n` distinct rows: numbered titles of three words, a year, two genres."""
    rng = np.random.default_rng(0)
    words = rng.integers(0, len(WORDS), size=(n, 3))
    with path.open("w") as fh:
        fh.write("item_id,title,year,genres\n")
        for i, (a, b, c) in enumerate(words):
            title = f"{WORDS[a]} {WORDS[b]} {WORDS[c]} {i}"
            fh.write(f"i{i},{title},{1950 + i % 70},{GENRES[a % 6]}|{GENRES[c % 6]}\n")
    return Source(path, COLUMNS)


def run(
    source: Source, work: Path, name: str, spec: str, embedder, ray: dict | None
) -> IngestSummary:
    """One ingest into a fresh store, manifest and cache under `work/name`; on Ray with
    these embedder options unless `ray` is None."""
    where = work / name
    stage = RayStage(spec, ray) if ray is not None else None
    with EmbeddingCache(where / "cache") as cache:
        return ingest(
            source,
            f"faiss:{where / 'store'}?index=Flat",
            spec,
            IngestOptions(batch_size=256, checkpoint_seconds=5),
            embedder=embedder,
            cache=cache,
            manifest=where / "manifest.sqlite",
            stage=stage,
        )


def difference(a: Path, b: Path, n: int) -> str:
    """How the two stores differ: "identical", else the largest difference of a vector
    component (a model may round differently in another batch or thread count)."""
    ids = [f"i{i}" for i in range(n)]
    with open_store(f"faiss:{a / 'store'}") as x, open_store(f"faiss:{b / 'store'}") as y:
        left, right = x.fetch(ids), y.fetch(ids)
    if len(left) != n or any(
        p.id != q.id or p.metadata != q.metadata for p, q in zip(left, right, strict=True)
    ):
        return "DIFFERENT ids or metadata"
    gap = max(float(np.abs(p.vector - q.vector).max()) for p, q in zip(left, right, strict=True))
    return "identical" if gap == 0 else f"ids and metadata identical, vectors within {gap:.1e}"


def compare(label: str, n: int, spec: str, rounds: int, work: Path, device: str) -> None:
    source = write_catalog(work / f"{label}.csv", n)
    embedder = get_embedder(spec, device=device) if spec == "text" else get_embedder(spec)
    embedder.embed(["warm up"])  # the in-process model loads outside every timing
    options = {"device": device} if spec == "text" else {}
    warm = write_catalog(work / f"{label}-warm.csv", 256)
    start = time.perf_counter()
    run(warm, work, f"{label}-warm", spec, embedder, options)  # workers import, load the model
    print(f"\n{label}: {n:,} rows, {spec}; warming the Ray workers took "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    ratios = []
    for r in range(rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        seconds = {}
        for engine in order:
            name = f"{label}-{r}-{engine}"
            summary = run(source, work, name, spec, embedder, options if engine == "ray" else None)
            assert summary.upserted == n, summary
            seconds[engine] = summary.seconds
        same = difference(work / f"{label}-{r}-local", work / f"{label}-{r}-ray", n)
        ratios.append(seconds["ray"] / seconds["local"])
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"  round {r + 1}: local {seconds['local']:6.2f} s  ray {seconds['ray']:6.2f} s  "
            f"ratio {ratios[-1]:.3f}  stores: {same}  (load average {load})"
        )
    print(f"  median ratio ray / local: {statistics.median(ratios):.3f}  (target <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows with hash:64")
    parser.add_argument("--text-rows", type=int, default=1000, help="rows with text (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2, help="of the local Ray")
    parser.add_argument("--device", default="cpu", help="of the text embedder")
    parser.add_argument(
        "--local-threads",
        type=int,
        help="torch threads of the in-process text embedder (default: torch's own; the Ray "
        "workers run one each)",
    )
    parser.add_argument("--skip-hash", action="store_true")
    args = parser.parse_args()
    if args.local_threads:
        # the benchmark's own setting: the in-process model's threads
        import torch

        torch.set_num_threads(args.local_threads)
    # the benchmark's own dependency: Ray, started here
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="warning")
    print(f"local Ray started in {time.perf_counter() - start:.1f} s: {cluster()}")
    with tempfile.TemporaryDirectory(prefix="embedrec-ray-bench-") as tmp:
        work = Path(tmp)
        os.environ["EMBEDREC_CACHE"] = str(work / "cache-root")  # live edits, kept apart
        if not args.skip_hash:
            compare("hash", args.rows, "hash:64", args.rounds, work, args.device)
        if args.text_rows:
            compare("text", args.text_rows, "text", args.rounds, work, args.device)
    ray.shutdown()


if __name__ == "__main__":
    main()
