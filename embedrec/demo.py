"""`make demo`: the main job end to end on the embedded FAISS default, offline.

    python -m embedrec.demo [--workdir data/demo] [--images 2000] [--skip-bench]

1. MovieLens items as text vectors:   embedrec ingest configs/movielens.toml --store ...
2. A Fashion-MNIST subset as images:  embedrec ingest configs/fashion.toml --store ...
3. A two-tower training with the sequence user encoder (a user's vector from their last 50
   items, computed per request):      embedrec train configs/sequence.toml --out ...
   and its item vectors into FAISS through the same pipeline (embedder two-tower:MODEL)
4. The retrieval client over those stores (configs/serve.toml): recommendations for a user,
   similar items, a text search, an image search, with and without filters; then live
   events (a user's interactions, a new item) and the recommendations after them, through
   a Redis stream where redis-server is installed, else in process (docs/realtime.md).
5. A quick store comparison:          embedrec bench configs/bench.toml --quick
6. A quick leaderboard for the web app's Quality page (not the full one):
                                      embedrec evaluate configs/demo_quality.toml --out ...

Each step prints the command that does the same by hand. A rerun skips what is done: the
pipeline re-embeds and re-upserts nothing for an unchanged catalog. A step whose data is not
installed here (Fashion-MNIST without Debian's package, offline) is skipped with the command
that installs it; the others still run and the demo exits 0.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embedrec import Hit, Hits
from embedrec.cli import main as cli
from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.data.fetching import DatasetUnavailable
from embedrec.data.movielens import load_movielens
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import ServeConfig, StreamConfig, load_serve_config
from embedrec.retrieval.live.service import Live
from embedrec.testing.redis_server import RedisServer, redis_server_binary

console = Console(width=120)
FASHION = "fashion-mnist"
SERVE_CONFIG = Path("configs/serve.toml")
SETUP_HINT = "(`sudo scripts/setup-system.sh` installs all the demo and the tests use.)"
TEXT_QUERY = "a horror film about vampires"
"""A search the movie text space can answer: it embeds "{title} ({year}): {genres}" only."""
NEXT_STEPS = (
    (
        "search the movies by title words, genre and era, with a filter",
        f"embedrec query --store faiss:./data/demo/movies-text --text '{TEXT_QUERY}' "
        """--k 5 --filter '{"year": {"$gte": 1990}}'""",
    ),
    ("browse it all in the web app, at http://127.0.0.1:8501", "make ui"),
    (
        "serve it over HTTP: try each endpoint from http://127.0.0.1:8000/docs",
        "embedrec serve configs/serve.toml",
    ),
)
"""What the demo's last lines (and the README) suggest trying next."""


@dataclass(frozen=True)
class Step:
    """One `embedrec` command of the demo; `needs` names a dataset it cannot run without."""

    title: str
    argv: list[str]
    needs: str | None = None


def missing_data() -> dict[str, str]:
    """Datasets the demo needs that cannot be loaded here, each with why and how to fix it."""
    try:
        load_fashion_mnist()
    except DatasetUnavailable as exc:
        return {FASHION: f"{exc}\n{SETUP_HINT}"}
    return {}


def plan(work: Path, images: int) -> list[Step]:
    """The commands that build the stores the retrieval tour (step 4) reads."""
    model = work / "sequence.pt"
    text_store = f"faiss:{work}/movies-text?index=HNSW32"
    image_store = f"faiss:{work}/fashion-image?index=HNSW32"
    item_store = f"faiss:{work}/movies-sequence?index=HNSW32&metric=dot"
    steps = [
        Step(
            "1. MovieLens items -> text vectors -> FAISS",
            ["ingest", "configs/movielens.toml", "--store", text_store],
        ),
        Step(
            f"2. {images:,} Fashion-MNIST products -> image vectors -> FAISS",
            ["ingest", "configs/fashion.toml", "--limit", str(images), "--store", image_store],
            needs=FASHION,
        ),
    ]
    if not model.exists():
        train = ["train", "configs/sequence.toml", "--out", str(model)]
        steps.append(Step("3a. Two-tower training, sequence user encoder", train))
    ingest = ["ingest", "configs/movielens.toml", "--embedder", f"two-tower:{model}"]
    steps.append(Step("3b. Two-tower item vectors -> FAISS", [*ingest, "--store", item_store]))
    return steps


def bench_step(work: Path) -> Step:
    """The quick comparison; it skips (and reports) a dataset that is not installed itself."""
    argv = ["bench", "configs/bench.toml", "--quick", "--out", str(work / "bench")]
    return Step("5. Store comparison (quick)", argv)


def quality_step(work: Path) -> Step:
    """A quick leaderboard, labelled as one, so that the web app's Quality page has rows."""
    argv = ["evaluate", "configs/demo_quality.toml", "--out", str(work / "quality-quick")]
    return Step("6. A quick leaderboard (a 3-epoch two-tower against most popular)", argv)


def run_step(step: Step, missing: dict[str, str], runner: Callable[[list[str]], int]) -> bool:
    """Run one step; a step whose data is missing is skipped with the reason. False if skipped."""
    console.rule(f"[bold]{step.title}")
    console.print("[dim]$ embedrec " + " ".join(f"'{a}'" if " " in a else a for a in step.argv))
    if step.needs in missing:
        console.print(f"[yellow]skipped: {escape(missing[step.needs])}")
        return False
    start = time.perf_counter()
    code = runner(step.argv)
    if code:
        raise SystemExit(f"demo: `embedrec {step.argv[0]}` failed with exit code {code}")
    console.print(f"[dim]{step.title}: {time.perf_counter() - start:.1f} s")
    return True


def show(title: str, hits: Hits, columns: tuple[str, ...]) -> None:
    table = Table(title=escape(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("id")
    for col in columns:
        table.add_column(col, overflow="fold")  # a long title wraps, never cut
    table.add_column("score", justify="right")
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata or {}
        cells = [
            ", ".join(v) if isinstance(v := meta.get(c, ""), list) else str(v) for c in columns
        ]
        table.add_row(str(rank), hit.id, *cells, f"{hit.score:.3f}")
    console.print(table)


def serve_config(missing: dict[str, str]) -> ServeConfig:
    """configs/serve.toml, less the image space when step 2 could not build its store."""
    config = load_serve_config(SERVE_CONFIG)
    return config.model_copy(update={"image": None}) if FASHION in missing else config


def movie_tour(rec: Recommender) -> None:
    ml = load_movielens()
    titles = dict(zip(ml.items["item_id"], ml.items["title"], strict=True))
    seen = ml.ratings[ml.ratings["user_id"] == "1"]
    liked = seen.sort_values("rating", ascending=False)["item_id"].head(5)
    console.print("user 1 rated highly: " + "; ".join(titles[i] for i in liked))
    movie = ("title", "year", "genres")
    result = rec.recommend("1", 5)
    show(f"recommend('1', 5) [answered by {result.source}]", result.hits, movie)
    result = rec.recommend("1", 5, filter={"genres": "Sci-Fi", "year": {"$lt": 1990}})
    show("recommend('1', 5, filter=Sci-Fi before 1990)", result.hits, movie)
    for space in ("text", "two-tower"):
        hits = rec.similar("50", 5, space=space).hits
        show(f"similar('50' = Star Wars, space={space!r})", hits, movie)
    hits = rec.search_text(TEXT_QUERY, 5).hits
    show(f"search_text({TEXT_QUERY!r})", hits, movie)


def live_tour(rec: Recommender, work: Path) -> None:
    """Events into the service: user 1 watches three vampire films and a new film enters
    the catalogue; under the sequence user encoder their next recommendations follow that
    history (not only leave the watched films out); then the film is removed again."""
    server = RedisServer(work / "redis") if redis_server_binary() else None
    how = f"through a Redis stream ({server.url})" if server else "in process (no redis-server)"
    console.rule(f"[bold]4b. Live events {how}")
    movie = ("title", "year", "genres")
    before = rec.recommend("1", 5)
    show(f"recommend('1', 5) before [answered by {before.source}]", before.hits, movie)
    watched = rec.search_text(TEXT_QUERY, 3).hits
    now = time.time()
    new = {"title": "Saturn Rising", "year": 2026, "genres": ["Documentary", "Sci-Fi"]}
    events = [
        {"event_id": f"demo-{now}-{n}", "user_id": "1", "item_id": i, "timestamp": now + n}
        for n, i in enumerate(watched.ids)
    ]
    events.append({"event_id": f"demo-{now}-new", "op": "added", "item_id": "demo-saturn",
                   "fields": new, "text": "Saturn Rising (2026): a documentary about Saturn's "
                   "moons"})  # fmt: skip
    console.print(f"[dim]POST /events: user 1 watched {_titles(watched)}; a new film")
    config = StreamConfig(redis=server.start().url if server else None, block_s=0.1)
    live = Live(rec, config, consume=True)
    live.start()
    try:
        live.accept(events)
        deadline = time.monotonic() + 10
        while len(live.histories.live("1")) < len(watched) and time.monotonic() < deadline:
            time.sleep(0.02)
        after = rec.recommend("1", 5)
        show(f"recommend('1', 5) after [answered by {after.source}]", after.hits, movie)
        fresh = [h for h in after.hits if h.id not in before.hits.ids]
        console.print(f"{len(fresh)} of the 5 are new, from user 1's history as it is now: "
                      f"{_titles(fresh)}")  # fmt: skip
        hits = rec.search_text("documentary about the moons of Saturn", 3).hits
        show("search_text('documentary about the moons of Saturn')", hits, movie)
        live.accept([{"event_id": f"demo-{now}-gone", "op": "removed", "item_id": "demo-saturn"}])
        store = rec.space("text").failover.primary
        while store.fetch(["demo-saturn"]) and time.monotonic() < deadline + 10:
            time.sleep(0.02)  # the film leaves the demo's stores again
    finally:
        live.close()
        if server is not None:
            server.stop()


def _titles(hits: Iterable[Hit]) -> str:
    return "; ".join(str((h.metadata or {}).get("title", h.id)) for h in hits)


def image_tour(rec: Recommender) -> None:
    fm = load_fashion_mnist()
    query = fm.test_images[0]
    label = fm.classes[int(fm.test_labels[0])]
    show(f"search_image(test image 0, a {label!r})", rec.search_image(query, 5).hits, ("category",))
    hits = rec.search_image(query, 5, filter={"category": {"$ne": label}}).hits
    show(f"search_image(test image 0, filter category $ne {label!r})", hits, ("category",))


def retrieval(missing: dict[str, str], work: Path) -> None:
    console.rule(f"[bold]4. Recommendations and search ({SERVE_CONFIG})")
    console.print(f"[dim]$ embedrec serve {SERVE_CONFIG}   # the same over HTTP")
    rec = Recommender.from_config(serve_config(missing))
    try:
        movie_tour(rec)
        live_tour(rec, work)
        if FASHION in missing:
            console.print("[yellow]image search skipped: no Fashion-MNIST store (step 2)")
        else:
            image_tour(rec)
    finally:
        rec.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/demo"))
    parser.add_argument("--images", type=int, default=2000, help="Fashion-MNIST products")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args(argv)
    bench = "" if args.skip_bench else " and a quick store comparison"
    console.print(
        f"[bold]embedrec demo[/]: text, image and two-tower vectors into FAISS under "
        f"{args.workdir}, recommendations and search over them{bench}. Each step prints the "
        "command that does the same by hand; a rerun redoes nothing."
    )
    if args.workdir != Path("data/demo"):
        console.print(f"[yellow]{SERVE_CONFIG} reads data/demo; step 4 uses those stores")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    missing = missing_data()
    for step in plan(args.workdir, args.images):
        run_step(step, missing, cli)
    retrieval(missing, args.workdir)
    if not args.skip_bench:
        run_step(bench_step(args.workdir), missing, cli)
    run_step(quality_step(args.workdir), missing, cli)
    skipped = ", ".join(sorted(missing))
    console.rule(
        f"[bold]demo done in {time.perf_counter() - started:.0f} s"
        + (f" (skipped what needs {skipped})" if skipped else "")
    )
    console.print("Next (with .venv active: `source .venv/bin/activate`):")
    for why, command in NEXT_STEPS:
        console.print(f"  {why}:\n    [bold]{escape(command)}[/]", soft_wrap=True)


if __name__ == "__main__":
    main()
