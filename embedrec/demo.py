"""`make demo`: the main job end to end on the embedded FAISS default, offline.

    python -m embedrec.demo [--workdir data/demo] [--images 2000] [--skip-bench]

1. MovieLens items as text vectors:   embedrec ingest configs/movielens.toml --store ...
2. A Fashion-MNIST subset as images:  embedrec ingest configs/fashion.toml --store ...
3. A quick two-tower training:        embedrec train configs/two_tower.toml --out ...
   and its item vectors into FAISS through the same pipeline (embedder two-tower:MODEL)
4. The retrieval client over those stores (configs/serve.toml): recommendations for a user,
   similar items, a text search, an image search, with and without filters.
5. A quick store comparison:          embedrec bench configs/bench.toml --quick

Each step prints the command that does the same by hand. A rerun skips what is done: the
pipeline re-embeds and re-upserts nothing for an unchanged catalog.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embedrec import Hits
from embedrec.cli import main as cli

console = Console(width=120)


def step(title: str, argv: list[str]) -> None:
    console.rule(f"[bold]{title}")
    console.print("[dim]$ embedrec " + " ".join(f"'{a}'" if " " in a else a for a in argv))
    start = time.perf_counter()
    code = cli(argv)
    if code:
        raise SystemExit(f"demo: `embedrec {argv[0]}` failed with exit code {code}")
    console.print(f"[dim]{title}: {time.perf_counter() - start:.1f} s")


def show(title: str, hits: Hits, columns: tuple[str, ...]) -> None:
    table = Table(title=escape(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("id")
    for col in columns:
        table.add_column(col)
    table.add_column("score", justify="right")
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata or {}
        cells = [
            ", ".join(v) if isinstance(v := meta.get(c, ""), list) else str(v) for c in columns
        ]
        table.add_row(str(rank), hit.id, *cells, f"{hit.score:.3f}")
    console.print(table)


def retrieval(workdir: Path) -> None:
    from embedrec.ingestion.datasets import load_fashion_mnist, load_movielens
    from embedrec.retrieval.client import Recommender

    console.rule("[bold]4. Recommendations and search (configs/serve.toml)")
    console.print("[dim]$ embedrec serve configs/serve.toml   # the same over HTTP")
    ml = load_movielens()
    titles = dict(zip(ml.items["item_id"], ml.items["title"], strict=True))
    rec = Recommender.from_config(Path("configs/serve.toml"))
    try:
        seen = ml.ratings[ml.ratings["user_id"] == "1"]
        liked = seen.sort_values("rating", ascending=False)["item_id"].head(5)
        console.print("user 1 rated highly: " + "; ".join(titles[i] for i in liked))
        movie = ("title", "year", "genres")
        result = rec.recommend("1", 5)
        show(f"recommend('1', 5) [answered by {result.source}]", result.hits, movie)
        result = rec.recommend("1", 5, filter={"genres": "Sci-Fi", "year": {"$lt": 1990}})
        show("recommend('1', 5, filter=Sci-Fi before 1990)", result.hits, movie)
        show(
            "similar('50' = Star Wars, space='text')",
            rec.similar("50", 5, space="text").hits,
            movie,
        )
        show(
            "similar('50' = Star Wars, space='two-tower')",
            rec.similar("50", 5, space="two-tower").hits,
            movie,
        )
        show(
            "search_text('a heist that goes wrong')",
            rec.search_text("a heist that goes wrong", 5).hits,
            movie,
        )
        fm = load_fashion_mnist()
        label = fm.classes[int(fm.test_labels[0])]
        show(
            f"search_image(test image 0, a {label!r})",
            rec.search_image(fm.test_images[0], 5).hits,
            ("category",),
        )
        show(
            f"search_image(test image 0, filter category $ne {label!r})",
            rec.search_image(fm.test_images[0], 5, filter={"category": {"$ne": label}}).hits,
            ("category",),
        )
    finally:
        rec.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/demo"))
    parser.add_argument("--images", type=int, default=2000, help="Fashion-MNIST products")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args(argv)
    if args.workdir != Path("data/demo"):
        console.print("[yellow]configs/serve.toml reads data/demo; step 4 uses those stores")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    step(
        "1. MovieLens items -> text vectors -> FAISS",
        ["ingest", "configs/movielens.toml", "--store", f"faiss:{work}/movies-text?index=HNSW32"],
    )
    step(
        f"2. {args.images:,} Fashion-MNIST products -> image vectors -> FAISS",
        [
            "ingest",
            "configs/fashion.toml",
            "--limit",
            str(args.images),
            "--store",
            f"faiss:{work}/fashion-image?index=HNSW32",
        ],
    )
    model = work / "two_tower.pt"
    if not model.exists():
        step("3a. Two-tower training", ["train", "configs/two_tower.toml", "--out", str(model)])
    step(
        "3b. Two-tower item vectors -> FAISS",
        [
            "ingest",
            "configs/movielens.toml",
            "--embedder",
            f"two-tower:{model}",
            "--store",
            f"faiss:{work}/movies-two-tower?index=HNSW32&metric=dot",
        ],
    )
    retrieval(work)
    if not args.skip_bench:
        step(
            "5. Store comparison (quick)",
            ["bench", "configs/bench.toml", "--quick", "--out", str(work / "bench")],
        )
    console.rule(f"[bold]demo done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
