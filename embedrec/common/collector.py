"""The garbage collector put aside while bulk jobs run: a job that makes and keeps millions
of small objects (an ingest's rows) pays Python's default collections, which walk every
object the process holds, about 3 µs a row; with the objects that existed before frozen
out of them and the young generation collected less often, about 0.2 µs."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _Collecting:
    """The collector's settings put aside while bulk jobs run."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: int = 0
    thresholds: tuple[int, ...] = ()
    froze: bool = False


_COLLECTING = _Collecting()


@contextmanager
def collecting_less(young: int) -> Iterator[None]:
    """Collect garbage less often while bulk jobs run: objects that exist before (modules,
    a model) are frozen out of the collections (`gc.freeze`, unless someone froze others,
    which would be thawed with them), and the young generation is collected every `young`
    new objects. Both are put back when the last job running ends (any number, on any
    threads)."""
    state = _COLLECTING
    with state.lock:
        if state.runs == 0:
            state.thresholds = gc.get_threshold()
            state.froze = gc.get_freeze_count() == 0
            if state.froze:
                gc.freeze()
            gc.set_threshold(max(state.thresholds[0], young), *state.thresholds[1:])
        state.runs += 1
    try:
        yield
    finally:
        with state.lock:
            state.runs -= 1
            if state.runs == 0:
                gc.set_threshold(*state.thresholds)
                if state.froze:
                    gc.unfreeze()
