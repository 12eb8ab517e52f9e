"""How many items a model embedder (text, image) runs through its model at once, by device.

`batch_size="auto"` (the default) is the embedder's own CPU size on a CPU or MPS. On CUDA it
is found once per (model, device) in the process, on the first call with more items than
that size: a probe runs the model on the call's items (repeated as needed) at the CPU size,
then doubles it while each doubling raises throughput by at least `GAIN`, up to the
embedder's ceiling; a size that runs out of memory ends the probe (the one before it is
kept; the CPU size itself is halved until it fits). A call with fewer items than the CPU
size runs as one batch and probes nothing, so a single query never pays for it.

Whatever the size (auto or a number), a batch that runs out of CUDA memory mid-run is split
in halves and retried, and the size in use drops to the half for the rest of the process,
so one long text or a busy GPU slows an ingest down instead of failing it. Only a single
item that does not fit raises. A size never changes the vectors beyond float rounding: each
item's vector depends on it alone (text batches are formed as sentence-transformers forms
them, so on a CPU they are the same to the bit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from embedrec.embedders.base import InputError

AUTO = "auto"
BatchSize = int | Literal["auto"]
GAIN = 1.10
"""A probe keeps doubling while a doubling raises items/s by at least 10%."""

log = logging.getLogger(__name__)
T = TypeVar("T")
Encode = Callable[[Sequence[T]], np.ndarray]
_sizes: dict[tuple[str, str, BatchSize], int] = {}
"""The size in use per (embedder name, device, requested size), for the process: probed
(auto on CUDA) or lowered after running out of memory."""


def check_batch_size(value: object) -> BatchSize:
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"batch_size must be a number >= 1 or 'auto', not {value!r}")
    return value


def _out_of_memory() -> type[BaseException]:
    import torch  # loaded already: only model embedders batch through here

    return torch.cuda.OutOfMemoryError


def _free_cuda_cache() -> None:
    import torch  # loaded already, as in _out_of_memory

    torch.cuda.empty_cache()  # a no-op where CUDA was never initialised


def probe_batch_size(
    run: Callable[[int], object], start: int, most: int, gain: float = GAIN
) -> int:
    """The batch size from `start`, doubled up to `most` while `run(size)` (the model on
    `size` items) gains at least `gain` in items/s and does not run out of CUDA memory. The
    first size that runs is run once untimed (warm-up); if `start` itself runs out of memory
    it is halved until a size fits (1 if none does: the run then raises)."""
    oom = _out_of_memory()
    best, best_rate, size, limit, warm = 0, 0.0, start, most, False
    while 1 <= size <= limit:
        try:
            if not warm:
                run(size)
            began = time.perf_counter()
            run(size)
            rate = size / max(time.perf_counter() - began, 1e-9)
        except oom:
            rate = -1.0  # handled below, outside the handler that holds the batch's tensors
        if rate < 0:
            _free_cuda_cache()
            limit = size - 1
            size = size if best else size // 2
            continue
        warm = True
        if best and rate < best_rate * gain:
            break
        best, best_rate, size = size, rate, size * 2
    return max(best, 1)


@dataclass
class BatchSizer:
    """One embedder's batching: `requested` (a number or auto), `default` (its CPU size and
    auto's starting point), `most` (auto's ceiling), `name` (the embedder's name, which keys
    the sizes found)."""

    name: str
    requested: BatchSize
    default: int
    most: int

    def __post_init__(self) -> None:
        self.requested = check_batch_size(self.requested)

    def size(self, device: str) -> int:
        """The size in use on `device`: probed or lowered earlier in the process, else the
        requested size (auto: the CPU size)."""
        fixed = self.default if self.requested == AUTO else self.requested
        return _sizes.get((self.name, device, self.requested), fixed)

    def run(
        self,
        device: str,
        items: Sequence[T],
        encode: Encode[T],
        probe: Callable[[int], object],
    ) -> np.ndarray:
        """`encode` over `items` in batches, concatenated. `probe(n)` runs the model on n
        items for auto's probe. An `InputError` is re-raised with its position in `items`."""
        key = (self.name, device, self.requested)
        wants_probe = self.requested == AUTO and device.startswith("cuda")
        if wants_probe and key not in _sizes and len(items) > self.default:
            _sizes[key] = probe_batch_size(probe, self.default, self.most)
            log.info("%s on %s: batch size %d (auto)", self.name, device, _sizes[key])
        out, start = [], 0
        while start < len(items):
            chunk = items[start : start + self.size(device)]
            out.append(self._encode(device, chunk, start, encode))
            start += len(chunk)
        return np.concatenate(out)

    def _encode(
        self, device: str, chunk: Sequence[T], offset: int, encode: Encode[T]
    ) -> np.ndarray:
        oom = _out_of_memory()
        try:
            return encode(chunk)
        except InputError as exc:
            raise InputError(offset + exc.index, exc.reason) from None
        except oom:
            if len(chunk) == 1:
                raise
        # out of the handler: its traceback, which holds the batch's tensors, is released
        _free_cuda_cache()
        half = (len(chunk) + 1) // 2
        if half < self.size(device):
            log.warning(
                "%s on %s: out of memory at batch size %d; now %d",
                self.name, device, len(chunk), half,
            )  # fmt: skip
            _sizes[(self.name, device, self.requested)] = half
        first = self._encode(device, chunk[:half], offset, encode)
        return np.concatenate([first, self._encode(device, chunk[half:], offset + half, encode)])
