"""`embedrec ingest`, `embedrec query` and `embedrec datasets list|fetch|export`."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from embedrec.common.output import Output, add_output_flags
from embedrec.data.registry import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to `sub`."""
    _register_ingest(sub)
    _register_query(sub)
    _register_datasets(sub)


# -- ingest ------------------------------------------------------------------------------


def _register_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="load a catalog (CSV/TSV, Parquet, JSONL) into a vector store",
        description="Embed a catalog's rows and upsert them into a store. Rerunning skips "
        "unchanged rows; a killed run resumes. Flags override the config file's values.",
    )
    p.add_argument("config", nargs="?", help="a TOML config ([source] [embedder] [store] [ingest])")
    p.add_argument("--config", dest="config_flag", metavar="PATH", help="same as the positional")
    src = p.add_argument_group("source")
    src.add_argument("--source", metavar="PATH", help="catalog file: .csv .tsv .parquet .jsonl")
    src.add_argument("--dataset", choices=DATASETS, help="packaged dataset")
    src.add_argument("--limit", type=int, help="with --dataset: only the first N records")
    src.add_argument("--format", choices=("csv", "tsv", "jsonl", "parquet"))
    src.add_argument("--delimiter", help="CSV field delimiter (default: by format)")
    src.add_argument("--id-col", metavar="COL", help="the column holding each record's id")
    src.add_argument("--text", metavar="TEMPLATE", help='text to embed, e.g. "{title} {genres}"')
    src.add_argument("--image-col", metavar="COL", help="column with an image path or bytes")
    src.add_argument(
        "--metadata",
        metavar="SPEC",
        help="columns to store: name[:type][!],...; types str int float bool list auto; "
        "! = required",
    )
    src.add_argument("--list-sep", metavar="SEP", help='separator of list cells (default "|")')
    p.add_argument("--store", metavar="URI", help="e.g. faiss:./data/movies?index=HNSW32")
    p.add_argument(
        "--embedder",
        metavar="SPEC",
        help="text, text:MODEL, image, image?image_size=N, two-tower:MODEL.pt (the item "
        "vectors of a model `embedrec train` saved; the catalog needs its item features), or "
        "hash:DIM (a hashed bag of words, no model: for benchmarks and tests)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, help="rows embedded together (default 256)")
    run.add_argument("--checkpoint-seconds", type=float, help="flush+commit interval (default 5)")
    run.add_argument("--rejects", metavar="PATH", help="JSONL file for rejected rows")
    run.add_argument(
        "--max-rejects", metavar="N|P%", type=_reject_limit,
        help="abort past N rejected rows, or fail the run (exit 1, at its end) when more than "
        "P%% of the rows read were rejected; rows that landed stay and a rerun resumes",
    )  # fmt: skip
    run.add_argument(
        "--sync", action="store_true", default=None, help="delete ids that left the catalog"
    )
    run.add_argument(
        "--engine", default="local", metavar="local|ray[:ADDRESS]",
        help="where rows are embedded: local (default, in this process) or ray: Ray Data "
        "map_batches on a Ray cluster (a GPU per actor where it has GPUs; Qdrant servers and "
        "Pinecone written from its workers too), ADDRESS as ray.init takes it (auto, "
        "HOST:6379, ray://HOST:10001; none: $RAY_ADDRESS, else a local Ray); the ray extra; "
        "docs/scale.md",
    )  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar or records")
    _add_rebuild_flags(p)
    add_output_flags(p)
    p.set_defaults(func=_ingest)


def _add_rebuild_flags(p: argparse.ArgumentParser) -> None:
    again = p.add_argument_group("rebuild behind an alias")
    again.add_argument(
        "--rebuild",
        action="store_true",
        help="build a new generation of the store from the catalog, validate it, then swap "
        "the alias to it (the old one stays as previous: embedrec rollback)",
    )
    again.add_argument(
        "--wait",
        action="store_true",
        help="with --rebuild: when another rebuild of the alias is running, wait for it to "
        "end (without: refuse, naming its pid, host and start)",
    )
    again.add_argument(
        "--min-recall",
        type=float,
        default=0.9,
        metavar="R",
        help="with --rebuild: the recall@10 against exact search it must reach (default 0.9)",
    )
    again.add_argument(
        "--validate-sample",
        type=int,
        default=100,
        metavar="N",
        help="with --rebuild: records fetched back and vectors searched (default 100)",
    )
    again.add_argument(
        "--calibrate",
        type=Path,
        metavar="CONFIG",
        help="with --rebuild: calibrate the new generation to the target recall of CONFIG's "
        "[calibrate] section (see embedrec calibrate, configs/calibrate.toml) before "
        "validating it, so that it serves with its own search defaults",
    )


FLAGS = {
    "source.path": "--source PATH",
    "source.id": "--id-col COLUMN",
    "source.text": "--text TEMPLATE",
    "source.image": "--image-col COLUMN",
    "source.metadata": "--metadata COLUMNS",
    "embedder.spec": "--embedder SPEC",
    "store.uri": "--store URI",
}
"""The flag that sets each config key, for errors about the key."""


def _merge_flags(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The config file's sections with the flags that were given laid over them."""
    sections = {name: dict(data.get(name) or {}) for name in ("source", "embedder", "store")}
    sections["ingest"] = dict(data.get("ingest") or {})
    source = sections["source"]
    if args.source is not None:
        source.pop("dataset", None)
        source.pop("limit", None)
    if args.dataset is not None:
        source.pop("path", None)
    if args.text is not None:
        source.pop("image", None)
    if args.image_col is not None:
        source.pop("text", None)
    flags = {
        "source": {
            "path": args.source,
            "dataset": args.dataset,
            "limit": args.limit,
            "format": args.format,
            "delimiter": args.delimiter,
            "id": args.id_col,
            "text": args.text,
            "image": args.image_col,
            "metadata": args.metadata,
            "list_sep": args.list_sep,
        },
        "embedder": {"spec": args.embedder, "device": args.device},
        "store": {"uri": args.store},
        "ingest": {
            "batch_size": args.batch_size,
            "checkpoint_seconds": args.checkpoint_seconds,
            "rejects": args.rejects,
            "max_rejects": args.max_rejects,
            "sync": args.sync,
        },
    }
    for name, values in flags.items():
        sections[name].update({k: v for k, v in values.items() if v is not None})
    merged = {**data, **{k: v for k, v in sections.items() if v}}
    return merged


def _given(args: argparse.Namespace) -> set[str]:
    """The path keys the flags set ("section.key"): taken from the working directory."""
    keys = {
        "source.path": args.source, "store.uri": args.store, "ingest.rejects": args.rejects,
        "embedder.spec": args.embedder,
    }  # fmt: skip
    return {key for key, value in keys.items() if value is not None}


def _ingest(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.common.config import ConfigFileError, read_toml
    from embedrec.ingestion.config import parse_ingest_config

    if args.config and args.config_flag:
        raise ValueError("give the config once: positional or --config, not both")
    path = args.config or args.config_flag
    data = read_toml(path) if path else {}
    config = parse_ingest_config(
        _merge_flags(data, args), path or "command line", FLAGS,
        config_file=Path(path) if path else None, from_command_line=_given(args),
    )  # fmt: skip
    if config.source is None:
        raise ConfigFileError("no catalog: give --source PATH or --dataset NAME (or a config)")
    if config.store is None:
        raise ConfigFileError("no store: give --store URI (e.g. faiss:./data/movies)")
    out = Output.from_args(args, "ingest")
    if args.rebuild:
        # for this command only: --help stays fast
        from embedrec.ingestion.generation_commands import run_rebuild
        from embedrec.ingestion.validation import Checks
        from embedrec.stores.recall.calibrate import load_calibrate_config

        settings = load_calibrate_config(args.calibrate) if args.calibrate else None
        checks = Checks(args.min_recall, args.validate_sample, calibrate=settings)
        parts = _prepare(config, out)
        with _engine(config, out, args.engine) as stage:
            return run_rebuild(
                config, parts, checks, out, progress=not args.no_progress, wait=args.wait,
                stage=stage,
            )  # fmt: skip
    if args.min_recall != 0.9 or args.validate_sample != 100 or args.calibrate or args.wait:
        raise ValueError(
            "--min-recall, --validate-sample, --calibrate and --wait apply only with --rebuild"
        )
    with _engine(config, out, args.engine) as stage:
        return _run_ingest(config, out, progress=not args.no_progress, stage=stage)


def _catalog_path(config: Any, out: Output) -> Any:
    """The catalog file, exporting a packaged dataset into the cache on first use."""
    # for this command only: --help stays fast
    from embedrec.common.settings import cache_root
    from embedrec.data.datasets import export_catalog

    src = config.source
    if src.path is not None:
        return src.path
    name = src.dataset + (f"-{src.limit}" if src.limit else "")
    path = cache_root() / "catalogs" / f"{name}.csv"
    if not path.exists():
        out.say(f"exporting {src.dataset} to {path} ...")
        export_catalog(src.dataset, path, limit=src.limit)
    return path


def _reject_limit(text: str) -> int | str:
    """--max-rejects as the config takes it: an int, or the "P%" string."""
    return int(text) if text.strip().isdigit() else text


def _prepare(config: Any, out: Output) -> tuple[Any, Any, Any]:
    """The catalog as a `Source`, the embedder and the ingest options the config names."""
    # for this command only: --help stays fast
    from embedrec.embedders import get_embedder
    from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
    from embedrec.ingestion.sources import Source
    from embedrec.ingestion.summary import IngestOptions

    src, emb, opts = config.source, config.embedder, config.ingest
    columns = ColumnMap(
        id=src.id,
        text=src.text,
        image=src.image,
        metadata=parse_metadata_spec(src.metadata),
        list_sep=src.list_sep,
    )
    source = Source(_catalog_path(config, out), columns, format=src.format, delimiter=src.delimiter)
    embedder = get_embedder(emb.spec, **_embedder_options(emb))
    options = IngestOptions(
        batch_size=opts.batch_size,
        checkpoint_seconds=opts.checkpoint_seconds,
        rejects=opts.rejects,
        max_rejects=opts.max_rejects,
        sync=opts.sync,
    )
    return source, embedder, options


def _embedder_options(emb: Any) -> dict[str, Any]:
    """The [embedder] keys that were set, as `get_embedder` keywords."""
    return {
        key: value
        for key, value in (("device", emb.device), ("batch_size", emb.batch_size))
        if value is not None  # unset: the spec's own option, else the embedder's default
    }


def _engine(config: Any, out: Output, engine: str) -> AbstractContextManager[Any]:
    """`--engine`: None (in process), or a stage on the Ray cluster joined for the run."""
    from embedrec.ingestion.distributed.stage import engine_stage  # --help stays fast

    return engine_stage(engine, config.embedder.spec, _embedder_options(config.embedder), out.say)


def _run_ingest(config: Any, out: Output, *, progress: bool, stage: Any) -> int:
    # for this command only: --help stays fast
    from embedrec.common.progress import Progress
    from embedrec.ingestion.pipeline import ingest
    from embedrec.ingestion.rebuild import live_target
    from embedrec.ingestion.summary import TooManyRejects

    src, spec = config.source, config.embedder.spec
    out.say(f"ingest {src.path or f'the {src.dataset} dataset'} -> {config.store.uri} with {spec}")
    source, embedder, options = _prepare(config, out)
    target = live_target(config.store.uri)  # an alias: its live generation
    if target != config.store.uri:
        out.say(f"{config.store.uri} is an alias: writing its live generation {target}")
    bar = Progress(source.estimate_rows(), "ingest", "rows", enabled=progress and out.progress)
    run = {"source": source.path, "store": config.store.uri, "embedder": embedder.name}
    try:
        with bar:
            summary = ingest(
                source, target, spec, options, embedder=embedder, progress=bar.update, stage=stage
            )
    except TooManyRejects as exc:
        _report(out, exc.summary, run)
        print(f"embedrec ingest: error: {exc}", file=sys.stderr, flush=True)
        return 1
    _report(out, summary, run)
    if summary.all_rejected:
        print(
            f"embedrec ingest: error: every one of the {summary.rows_read:,} rows read was "
            f"rejected; see {summary.rejects_path}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def _report(out: Output, summary: Any, run: dict[str, Any]) -> None:
    """The summary: an aligned table for people, every figure for --json."""
    items = summary.items()
    width = max(len(k) for k, _ in items)
    text = "\n".join(f"{key:>{width}}  {value}" for key, value in items)
    figures = {**run, **asdict(summary), "rows_per_s": round(summary.rows_per_s, 3)}
    out.summary(figures, text)


# -- query -------------------------------------------------------------------------------


QUERY_NOTE = (
    "Each run loads the model that built the store (the text model: about 7 s); "
    "`embedrec serve` or the Python client (Recommender) loads it once for many queries."
)


def _register_query(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="search a store with a text or an image",
        description="Embed the query with the embedder that built the store (which the "
        "store records at ingest time; --embedder must name the same model) and print the "
        f"top k. {QUERY_NOTE}",
    )
    p.add_argument(
        "--store",
        required=True,
        metavar="URI",
        help="the store, e.g. faiss:./data/demo/movies-text",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="query text")
    what.add_argument("--image", metavar="PATH", help="query image file")
    p.add_argument("--k", type=int, default=10, help="how many results (default 10)")
    p.add_argument(
        "--filter",
        metavar="JSON",
        help='on the stored metadata, e.g. \'{"genres": {"$in": ["Comedy"]}}\'; a field the '
        "store does not have is an error naming its fields",
    )
    p.add_argument(
        "--embedder",
        metavar="SPEC",
        help="default: the one that built the store (text, image, two-tower:MODEL.pt)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--params", metavar="JSON", help="search params, e.g. '{\"ef\": 128}'")
    add_output_flags(p)
    p.set_defaults(func=_query)


def _json_arg(flag: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} is not valid JSON: {exc}") from None


def _query(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.ingestion.store_info import embedder_for
    from embedrec.stores import open_existing

    out = Output.from_args(args, "query")
    filter_ = _json_arg("--filter", args.filter)
    params = _json_arg("--params", args.params)
    with open_existing(args.store) as store:  # the store says which embedder built it
        if filter_ is not None:
            store.check_filter(filter_)  # a misspelt field, before the model loads
        out.say(f"query {args.store}. {QUERY_NOTE}")
        device = {"device": args.device} if args.device else {}
        embedder = embedder_for(store, args.embedder, **device)
        hits = _search(store, embedder, args, filter_, params)
    found = [{"id": h.id, "score": h.score, "metadata": dict(h.metadata or {})} for h in hits]
    out.summary({"store": args.store, "k": args.k, "hits": found}, _hits_table(hits, args))
    return 0


def _hits_table(hits: Any, args: argparse.Namespace) -> str:
    """The hits as a table for people, every cell whole (long titles fold, never cut)."""
    # for this command only: --help stays fast
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"top {args.k} in {args.store}")
    table.add_column("#", justify="right")
    table.add_column("id", overflow="fold")
    table.add_column("score", justify="right")
    keys = list(dict.fromkeys(k for hit in hits for k in (hit.metadata or {})))
    for key in keys:
        table.add_column(key, overflow="fold")
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata or {}
        cells = ["|".join(v) if isinstance(v, list) else str(v) for v in map(meta.get, keys)]
        cells = ["" if meta.get(k) is None else c for k, c in zip(keys, cells, strict=True)]
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", *cells)
    buffer = io.StringIO()
    Console(file=buffer, width=max(100, Console().width)).print(table)
    return buffer.getvalue().rstrip("\n")


def _search(store: Any, embedder: Any, args: argparse.Namespace, filter_: Any, params: Any) -> Any:
    """The top k for the query text or image, embedded as the store's embedder needs."""
    query = args.text if args.image is None else Path(args.image)
    if embedder.modality == "item":
        raise ValueError(
            f"{args.store} holds item vectors of {embedder.name!r}: query them for a user "
            "(Recommender.recommend, or POST /recommend of embedrec serve), not by text or image"
        )
    if embedder.modality not in ("text", "image") or (
        (embedder.modality == "text") != (args.image is None)
    ):
        want = "--text" if embedder.modality == "text" else "--image"
        raise ValueError(f"the store's embedder {embedder.name!r} needs {want}")
    vector = embedder.embed([query])
    return store.search(vector, args.k, filter=filter_, params=params)[0]


# -- datasets ----------------------------------------------------------------------------


def _register_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list, fetch or export the packaged datasets")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    dsub.add_parser("list", help="the datasets embedrec can fetch").set_defaults(
        func=_datasets_list
    )
    fetch = dsub.add_parser("fetch", help="fetch a dataset into $EMBEDREC_CACHE")
    fetch.add_argument("name", choices=DATASETS)
    fetch.set_defaults(func=_datasets_fetch)
    export = dsub.add_parser("export", help="write a dataset as a catalog file")
    export.add_argument("name", choices=DATASETS)
    export.add_argument("out", help="catalog path; .csv .tsv .parquet .jsonl picks the format")
    export.add_argument("--limit", type=int, help="only the first N records")
    export.set_defaults(func=_datasets_export)


def _datasets_list(args: argparse.Namespace) -> int:
    width = max(map(len, DATASETS))
    for name, entry in DATASETS.items():
        print(f"{name:<{width}}  {entry.description}")
    return 0


def _datasets_fetch(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.common.settings import cache_root
    from embedrec.data.datasets import load

    data = load(args.name)
    sizes = {k: len(v) for k, v in vars(data).items() if hasattr(v, "__len__") and k != "classes"}
    print(f"{args.name}: " + ", ".join(f"{k} {n:,}" for k, n in sizes.items()))
    print(f"cache: {cache_root()}")
    return 0


def _datasets_export(args: argparse.Namespace) -> int:
    # for this command only: --help stays fast
    from embedrec.data.datasets import export_catalog

    out = export_catalog(args.name, args.out, limit=args.limit)
    print(out)
    return 0
