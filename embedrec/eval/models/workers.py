"""Independent tasks run here or spread over worker processes, results in task order.

Workers are spawned, not forked: a fork of a process whose torch or BLAS thread pools are
running can deadlock. Each worker receives the runner once (its initializer) and keeps it,
so what the runner loads lazily (a text model, a split) is loaded once per worker.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol


class TaskRunner(Protocol):
    def run(self, task: Any) -> Any: ...


_runner: Any = None
"""The runner of this worker process, set by its initializer."""


def _keep(runner: Any) -> None:
    global _runner
    _runner = runner


def _run(task: Any) -> Any:
    return _runner.run(task)


def run_all(
    runner: TaskRunner, tasks: Sequence[Any], workers: int, done: Callable[[Any], None]
) -> list[Any]:
    """`runner.run(task)` for every task, in this process when `workers` is 1, else in up
    to `workers` spawned processes (the runner must pickle); `done(result)` is called here
    as each finishes."""
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    if workers == 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(runner.run(task))
            done(results[-1])
        return results
    context = multiprocessing.get_context("spawn")
    slots: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=context, initializer=_keep, initargs=(runner,)
    ) as pool:
        futures = {pool.submit(_run, task): n for n, task in enumerate(tasks)}
        for future in as_completed(futures):
            slots[futures[future]] = future.result()
            done(slots[futures[future]])
    return slots
