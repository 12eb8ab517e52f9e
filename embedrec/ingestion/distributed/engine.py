"""Ray for `--engine ray[:ADDRESS]`: joining a cluster, and embedding a list of inputs on it
as Ray Data `map_batches` (stage.py decides which inputs, and hands the vectors on).

Where the cluster has GPUs, a pool of actors with a GPU each embeds (the model loads once
per actor and stays on its GPU); on CPUs alone, tasks of a CPU each on the worker processes
Ray keeps started, each loading the model once (actors.py): no actor to start per window.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from embedrec.ingestion.distributed.actors import EmbedActor, embed_batch, write_part

BLOCK_ROWS = 2048
"""Inputs per Ray Data block and per `map_batches` call, at most: a small window is cut
into about `BLOCKS_PER_WORKER` blocks per worker (of at least `MIN_BLOCK_ROWS` inputs), so
that every worker has some and a slow block holds up little."""
BLOCKS_PER_WORKER = 4
WRITER_CPUS = 0.5
"""What a writing task asks for: it waits on the store's server more than it computes."""
MIN_BLOCK_ROWS = 64


def parse_engine(text: str) -> str | None:
    """`--engine`: "local" (None: in process), "ray" (RAY_ADDRESS, else a local Ray) or
    "ray:ADDRESS" (e.g. ray:auto, ray:10.0.0.5:6379, ray:ray://head:10001)."""
    kind, sep, address = text.partition(":")
    if kind == "local" and not sep:
        return None
    if kind == "ray":
        if sep and not address:
            raise ValueError("--engine ray:ADDRESS needs an address after the colon")
        return address or ""
    raise ValueError(f"--engine {text!r}: expected local, ray or ray:ADDRESS")


@contextmanager
def connected(address: str) -> Iterator[None]:
    """Ray, connected to `address` ("" : RAY_ADDRESS, else a local Ray started here and
    stopped after); a Ray this process already joined is used as it is."""
    try:  # the optional `ray` extra, loaded only for --engine ray
        import ray
    except ImportError:
        raise ValueError(
            "--engine ray needs Ray: pip install 'embedrec[ray]' (ray[data])"
        ) from None
    if ray.is_initialized():
        yield
        return
    ray.init(address=address or None, include_dashboard=False, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()


SHARED_SCHEMES = ("qdrant", "pinecone")
"""Stores every worker can reach (a Qdrant server, Pinecone), so that workers write them;
a FAISS, local Qdrant or qdrant-edge store lives with the driver, which writes it."""


def writes_from_workers(store_uri: str) -> bool:
    return store_uri.partition(":")[0] in SHARED_SCHEMES


def write_parts(store_uri: str, parts: list[tuple[list[str], Any, list[dict]]]) -> list[Any]:
    """Start a Ray task per part (ids, vectors, metadata) writing it into the store; their
    results (`write_part`'s) come back through `ray.get`."""
    return [_write_task().remote(store_uri, *part) for part in parts]


@cache
def _write_task() -> Any:
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    return ray.remote(num_cpus=WRITER_CPUS)(write_part)


def uses_gpus() -> bool:
    """Whether the cluster has GPUs (then each actor takes one)."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def cluster() -> str:
    """What the Ray this process joined offers, and how the stage will use it."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    use = "an actor per GPU" if gpus else "tasks of a CPU each"
    return f"{len(ray.nodes())} node(s), {cpus} CPUs, {gpus} GPUs: {use}"


def embedded(spec: str, options: dict[str, Any], inputs: list[Any]) -> list[dict[str, Any]]:
    """`inputs` embedded on the cluster by `spec`: blocks of `pos` (the inputs' positions),
    `vector` and `error` (the reason an input was refused, else ""), in any order."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    for handler in logging.getLogger("ray.data").handlers:  # its log file keeps them
        if handler.get_name() == "console":  # a line per run on stdout: not under --json
            handler.setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()  # order is not needed: blocks carry `pos`
    context.enable_progress_bars = False
    context.raise_original_map_exception = True  # a worker's error, not a wrapper's
    context.print_on_execution_start = False
    pickled = not all(isinstance(item, str) for item in inputs)
    rows = [
        {"pos": pos, "input": pickle.dumps(item) if pickled else item}
        for pos, item in enumerate(inputs)
    ]
    pool, resources, workers = _compute()
    size = -(-len(rows) // (BLOCKS_PER_WORKER * workers))
    size = max(MIN_BLOCK_ROWS, min(BLOCK_ROWS, size))
    blocks = -(-len(rows) // size)
    args = (spec, tuple(sorted(options.items())), pickled)
    common = {"batch_size": size, "batch_format": "numpy"}
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    if pool is None:  # tasks on the workers Ray keeps started
        dataset = dataset.map_batches(embed_batch, fn_args=args, **common, **resources)
    else:
        compute = ray.data.ActorPoolStrategy(size=min(pool, blocks))
        dataset = dataset.map_batches(
            EmbedActor, fn_constructor_args=args, compute=compute, **common, **resources
        )
    try:
        return list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    except ray.exceptions.RayError as exc:
        raise ValueError(f"embedding on Ray failed: {_first_cause(exc)}") from exc


def _first_cause(exc: BaseException) -> str:
    """What a worker raised, under Ray's wrappers (each holds it as `cause` or `__cause__`)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return f"{type(exc).__name__}: {exc}"


def _compute() -> tuple[int | None, dict[str, float], int]:
    """How to embed: where the cluster has GPUs, the size of a pool of actors with a GPU
    each (the model stays on its GPU); else None: tasks of a CPU each on the workers Ray
    keeps started (no actor to start per window; each worker process loads the model once,
    actors.py). Then what each asks for, and how many can run at once."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1}, gpus
    return None, {"num_cpus": 1}, max(1, int(resources.get("CPU", 1)))
