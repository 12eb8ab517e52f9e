"""The embedding stage of an ingest on Ray (`--engine ray[:ADDRESS]`), an `EmbedStage`.

Everything but the embedding stays in this process, the driver, as in pipeline/run.py: reading,
the manifest's choice of the rows that changed (made before any row goes to Ray), each row's
input (`prepare`, which rejects what the embedder cannot use), the embedding cache, rejects
and checkpoints, and the writes to a store that lives here (FAISS, a local Qdrant); a Qdrant
server or Pinecone is written from Ray tasks instead (engine.py). The driver gathers a
window of changed rows, looks their inputs up in the cache, and hands only the misses to
Ray, each distinct input once. While Ray embeds a window the driver reads the next; then the
window's batches go on to the pipeline's writer in catalog order, so the manifest records
rows in order and only once the store has them: a killed run resumes from its last
checkpoint, and a rerun embeds only what changed. Counts, rejects and the store come out as
in process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from embedrec.embedders import InputError, content_key
from embedrec.embedders.cached import cached_vectors
from embedrec.ingestion.distributed.engine import (
    cluster,
    connected,
    embedded,
    parse_engine,
    uses_gpus,
    write_parts,
    writes_from_workers,
)
from embedrec.ingestion.pipeline import Pending, Upserted, _Run, metadata_of

CPU_WINDOW_ROWS = 25_000
"""Changed rows per window on CPUs: one Ray Data run each (a few tenths of a second on
warm workers), small enough that reading the next overlaps most of it."""
GPU_WINDOW_ROWS = 250_000
"""On GPUs: each window starts its actors, each loading the model; the driver holds the
window's rows and vectors (~0.5 GB at 384-d)."""


_Ready = tuple[Pending, np.ndarray, int, Upserted | None]
"""A batch ready for the writer: its rows, vectors, cache hits, and its writes if workers
made them."""


@dataclass
class _Window:
    """Changed rows waiting for Ray, in batches; their inputs the cache lacks, once each."""

    batches: list[tuple[Pending, list[str]]] = field(default_factory=list)
    """Each batch's rows and their inputs' keys."""
    found: dict[str, np.ndarray] = field(default_factory=dict)
    """Vectors from the cache, by key."""
    misses: dict[str, int] = field(default_factory=dict)
    """Each input to embed, by key: its position in `inputs`."""
    inputs: list[Any] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    """Per miss, the batch that first needed it (it puts it in the cache)."""
    earlier: set[str] = field(default_factory=set)
    """Keys the window before embeds (it was on Ray when this one looked)."""
    carried: dict[str, np.ndarray | str] = field(default_factory=dict)
    """Their vectors (or the reason the embedder refused them), once that window is done."""
    rows: int = 0
    results: Future[list[dict[str, Any]]] | None = None


@dataclass
class RayStage:
    """The `EmbedStage` on the Ray cluster this process joined (engine.connected)."""

    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    """Keywords for `get_embedder` on each worker (device, batch_size)."""
    window_rows: int | None = None
    """Default: GPU_WINDOW_ROWS on a cluster with GPUs, else CPU_WINDOW_ROWS."""
    filling: _Window = field(default_factory=_Window)
    running: _Window | None = None
    """On Ray, its batches not handed on yet."""
    parts_written: int = 0
    """Parts of batches the workers wrote (stores they reach: `writes_from_workers`)."""
    handing: bool = False
    """A window's batches are being handed on (see `finish`)."""
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    """Waits on Ray for the running window while the driver reads on."""

    def submit(self, run: _Run, batch: Pending) -> None:
        batch, inputs = run._prepare(batch)
        keys = self._keys(run, batch, inputs)
        if not batch:
            return
        win = self.filling
        computed = (run.unwritten, run.caching)
        fresh = [k for k in keys if k not in win.found and k not in win.misses]
        win.found |= cached_vectors(run.cache, fresh, run.embedder.dim, computed)
        running = self.running.misses if self.running is not None else {}
        for key, item in zip(keys, inputs, strict=True):
            if key in win.found or key in win.misses:
                continue
            if key in running:
                win.earlier.add(key)
            else:
                win.misses[key] = len(win.inputs)
                win.inputs.append(item)
                win.owner.append(len(win.batches))
        win.batches.append((batch, keys))
        win.rows += len(batch)
        if self.window_rows is None:
            self.window_rows = GPU_WINDOW_ROWS if uses_gpus() else CPU_WINDOW_ROWS
        if win.rows >= self.window_rows:
            self._launch(run)

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

    def _launch(self, run: _Run) -> None:
        """Send the filling window to Ray (waited on in the background), then hand on the
        one Ray had before; the next window starts filling."""
        win, self.filling = self.filling, _Window()
        if win.inputs:
            win.results = self.pool.submit(embedded, self.spec, self.options, win.inputs)
        before, self.running = self.running, win
        if before is not None:
            self._hand_on(run, before, win)

    def finish(self, run: _Run) -> None:
        """Embed what is held and hand every batch on, in order. A reject that passes
        --max-rejects while a window is handed on calls it again: then it returns, and the
        run checkpoints what landed before that row, as in process."""
        if self.handing:
            return
        if self.filling.batches:
            self._launch(run)
        if self.running is not None:
            last, self.running = self.running, None
            self._hand_on(run, last, _Window())

    def _hand_on(self, run: _Run, win: _Window, after: _Window) -> None:
        """Hand `win`'s batches to the pipeline's writer, in order, once Ray has embedded
        them; then give `after` the vectors it counted on `win` for."""
        self.handing = True
        try:
            self._hand_on_all(run, win, after)
        finally:
            self.handing = False

    def _hand_on_all(self, run: _Run, win: _Window, after: _Window) -> None:
        vectors = np.zeros((len(win.inputs), run.embedder.dim), dtype=np.float32)
        errors: dict[int, str] = {}
        for out in win.results.result() if win.results is not None else ():
            pos = out["pos"]
            vectors[pos] = out["vector"]
            errors.update((int(p), e) for p, e in zip(pos, out["error"], strict=True) if e)
        ready: Iterable[_Ready] = (
            self._assemble(run, win, number, batch, keys, vectors, errors)
            for number, (batch, keys) in enumerate(win.batches)
        )
        if writes_from_workers(run.store_uri):
            ready = self._write_on_workers(run, ready)
        for rows, embedded_rows, hits, upserted in ready:
            if rows:
                run.hand_off(rows, embedded_rows, hits, upserted)
        for key in after.earlier:
            pos = win.misses[key]
            after.carried[key] = errors.get(pos, vectors[pos])

    def _assemble(
        self,
        run: _Run,
        win: _Window,
        number: int,
        batch: Pending,
        keys: list[str],
        vectors: np.ndarray,
        errors: dict[int, str],
    ) -> _Ready:
        """Batch `number` of `win` with its vectors, less the rows whose input the embedder
        refused (rejected as `process` rejects them), and how many vectors came from the
        cache: one an earlier batch or window computed counts, as in process."""
        rows: Pending = []
        out: list[np.ndarray] = []
        hits = 0
        for item, key in zip(batch, keys, strict=True):
            pos = win.misses.get(key)
            vector = win.found.get(key) if pos is None else errors.get(pos, vectors[pos])
            vector = win.carried[key] if vector is None else vector
            if isinstance(vector, str):
                run._reject_row(item[0], vector, run.source.columns.input_field)
                continue
            if pos is not None and win.owner[pos] == number:
                run.unwritten[key] = vector
            else:
                hits += 1
            rows.append(item)
            out.append(vector)
        return rows, np.stack(out) if out else np.empty((0, run.embedder.dim)), hits, None

    def _write_on_workers(self, run: _Run, ready: Iterable[_Ready]) -> list[_Ready]:
        """Start writing every batch of a window from Ray tasks, in parts the store takes;
        the pipeline's writer then waits for each batch's parts, in order, and records
        them in the manifest as if it had written them."""
        run.drain()  # the store exists, knows its fields and its embedder before any write
        step = max(1, run.writable_store().capabilities.max_batch)
        out: list[_Ready] = []
        for rows, vectors, hits, _ in ready:
            starts = range(0, len(rows), step)
            parts = [rows[start : start + step] for start in starts]
            refs = write_parts(
                run.store_uri,
                [
                    ([r.id for r, _ in part], vectors[start : start + len(part)],
                     metadata_of([r for r, _ in part]))
                    for start, part in zip(starts, parts, strict=True)
                ],
            )  # fmt: skip
            self.parts_written += len(parts)
            out.append((rows, vectors, hits, partial(_written, run, parts, refs)))
        return out


def _written(run: _Run, parts: list[Pending], refs: list[Any]) -> list[tuple[Pending, list]]:
    """Per part, the rows the workers wrote and rejects for those the store refused."""
    # the optional `ray` extra, loaded only for --engine ray
    import ray

    return [run.written(part, refused) for part, refused in zip(parts, ray.get(refs), strict=True)]


@contextmanager
def engine_stage(
    engine: str, spec: str, options: dict[str, Any], say: Callable[[str], None]
) -> Iterator[RayStage | None]:
    """`--engine`: None (in process), or a stage on the Ray cluster joined for the run."""
    address = parse_engine(engine)
    if address is None:
        yield None
        return
    with connected(address):
        say(f"embedding on Ray: {cluster()}")
        yield RayStage(spec, options)
