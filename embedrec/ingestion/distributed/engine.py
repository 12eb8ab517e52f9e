"""The embedding stage as Ray Data `map_batches` over a Ray cluster (`--engine ray[:ADDRESS]`).

Everything but the embedding stays in this process, the driver, as in pipeline.py: reading,
the manifest's choice of the rows that changed (made before any row goes to Ray), each row's
input (`prepare`, which rejects what the embedder cannot use), the embedding cache, rejects,
writes and checkpoints. The driver gathers a window of changed rows, looks their inputs up
in the cache, and hands only the misses to Ray, each distinct input once; actors (one GPU
each where the cluster has GPUs, one CPU each otherwise) embed them and Ray Data gives them
back in order. Each batch goes on to the pipeline's writer as soon as its vectors are back,
so the manifest records rows in catalog order, only after the store has flushed them: a
killed run resumes where its last checkpoint left it, and a rerun embeds only what changed.
"""

from __future__ import annotations

import logging
import pickle
from collections import ChainMap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedrec.embedders import InputError, content_key
from embedrec.embedders.cache import cached_vectors
from embedrec.ingestion.distributed.actors import EmbedActor, embed_batch
from embedrec.ingestion.pipeline import Pending, _Run

WINDOW_ROWS = 200_000
"""Changed rows gathered before Ray embeds them: one Ray Data run (and one start of its
actors, each loading the model) per window; the driver holds the window's rows."""
BLOCK_ROWS = 2048
"""Inputs per Ray Data block and per `map_batches` call."""


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


def cluster() -> str:
    """What the Ray this process joined offers, and how the stage will use it."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    use = "an actor per GPU" if gpus else "tasks of a CPU each"
    return f"{len(ray.nodes())} node(s), {cpus} CPUs, {gpus} GPUs: {use}"


@dataclass
class _Batch:
    rows: Pending
    keys: list[str]
    hits: int
    last: int
    """The highest position among the window's misses this batch waits for (-1: none)."""


@dataclass
class RayStage:
    """The `EmbedStage` on the Ray cluster `ray.init` joined (see `connected`)."""

    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    """Keywords for `get_embedder` on each actor (device, batch_size)."""
    window_rows: int = WINDOW_ROWS
    batches: list[_Batch] = field(default_factory=list)
    found: dict[str, np.ndarray] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    """Each input the cache lacks, by its position in `inputs`."""
    inputs: list[Any] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    """Per miss, the batch (of `batches`) that first needed it: it adds it to the cache."""
    rows: int = 0
    finishing: bool = False

    def submit(self, run: _Run, batch: Pending) -> None:
        batch, inputs = run._prepare(batch)
        keys = self._keys(run, batch, inputs)
        if not batch:
            return
        computed = ChainMap(run.unwritten, run.caching)
        fresh = [k for k in keys if k not in self.found and k not in self.misses]
        self.found |= cached_vectors(run.cache, fresh, run.embedder.dim, computed)
        hits, number = 0, len(self.batches)
        for key, item in zip(keys, inputs, strict=True):
            pos = self.misses.get(key)
            if key in self.found or (pos is not None and self.owner[pos] < number):
                hits += 1  # as in process: an earlier batch's vector is a cache hit
            elif pos is None:
                self.misses[key] = len(self.inputs)
                self.inputs.append(item)
                self.owner.append(number)
        last = max((self.misses[k] for k in keys if k in self.misses), default=-1)
        self.batches.append(_Batch(batch, keys, hits, last))
        self.rows += len(batch)
        if self.rows >= self.window_rows:
            self.finish(run)

    def _keys(self, run: _Run, batch: Pending, inputs: list[Any]) -> list[str]:
        """Each input's cache key; an input that cannot be hashed is rejected (in place)."""
        keys: list[str] = []
        kept: Pending = []
        kept_inputs: list[Any] = []
        name, modality = run.embedder.name, run.embedder.modality
        for i, (item, value) in enumerate(zip(batch, inputs, strict=True)):
            try:
                keys.append(content_key(name, value, modality, i))
            except InputError as exc:
                run._reject_row(item[0], exc.reason, run.source.columns.input_field)
                continue
            kept.append(item)
            kept_inputs.append(value)
        batch[:], inputs[:] = kept, kept_inputs
        return keys

    def finish(self, run: _Run) -> None:
        """Embed the window's misses on Ray and hand every batch on, in order. A reject that
        passes --max-rejects while it hands them on calls it again: then it returns, and
        the run checkpoints what landed before it."""
        if self.finishing:
            return
        self.finishing = True
        try:
            self._finish(run)
        finally:
            self.finishing = False

    def _finish(self, run: _Run) -> None:
        done = 0
        vectors = np.zeros((len(self.inputs), run.embedder.dim), dtype=np.float32)
        errors: dict[int, str] = {}
        queue = enumerate(self.batches)
        waiting = next(queue, None)
        for out in self._results():
            pos = out["pos"]
            vectors[pos] = out["vector"]
            errors.update((int(p), e) for p, e in zip(pos, out["error"], strict=True) if e)
            done = max(done, int(pos.max()) + 1)
            while waiting is not None and waiting[1].last < done:
                self._hand_off(run, *waiting, vectors, errors)
                waiting = next(queue, None)
        while waiting is not None:  # batches whose inputs were all in the cache
            self._hand_off(run, *waiting, vectors, errors)
            waiting = next(queue, None)
        self.batches, self.found, self.misses, self.inputs, self.owner = [], {}, {}, [], []
        self.rows = 0

    def _hand_off(
        self, run: _Run, number: int, batch: _Batch, vectors: np.ndarray, errors: dict[int, str]
    ) -> None:
        """Batch `number` of the window to the pipeline's writer, less the rows whose input
        the embedder refused (rejected as `process` rejects them)."""
        rows: Pending = []
        out: list[np.ndarray] = []
        for item, key in zip(batch.rows, batch.keys, strict=True):
            pos = self.misses.get(key)
            if pos is not None and pos in errors:
                run._reject_row(item[0], errors[pos], run.source.columns.input_field)
                continue
            vector = self.found[key] if pos is None else vectors[pos]
            if pos is not None and self.owner[pos] == number:
                run.unwritten[key] = vector
            rows.append(item)
            out.append(vector)
        if rows:
            run.hand_off(rows, np.stack(out), batch.hits)

    def _results(self) -> Iterator[dict[str, np.ndarray]]:
        """The misses' vectors from Ray, block by block in order."""
        if not self.inputs:
            return
        # the optional `ray` extra, loaded only for --engine ray
        import ray

        for handler in logging.getLogger("ray.data").handlers:  # its log file keeps them
            if handler.get_name() == "console":  # a line per run on stdout: not under --json
                handler.setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        common = {"batch_size": BLOCK_ROWS, "batch_format": "numpy"}
        pickled = not all(isinstance(item, str) for item in self.inputs)
        rows = [
            {"pos": pos, "input": pickle.dumps(item) if pickled else item}
            for pos, item in enumerate(self.inputs)
        ]
        blocks = -(-len(rows) // BLOCK_ROWS)
        args = (self.spec, tuple(sorted(self.options.items())), pickled)
        compute, resources = _compute(blocks)
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        if compute is None:  # tasks on the workers Ray keeps started
            dataset = dataset.map_batches(embed_batch, fn_args=args, **common, **resources)
        else:
            dataset = dataset.map_batches(
                EmbedActor, fn_constructor_args=args, compute=compute, **common, **resources
            )
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


def _compute(blocks: int) -> tuple[Any, dict[str, float]]:
    """How to embed, and what each worker asks for: where the cluster has GPUs, a pool of
    actors with a GPU each (the model stays on its GPU); else tasks of a CPU each on the
    workers Ray keeps started (no actor to start per window; each worker process loads the
    model once, actors.py). Never more actors than blocks."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return ray.data.ActorPoolStrategy(size=min(gpus, blocks)), {"num_gpus": 1}
    return None, {"num_cpus": 1}
