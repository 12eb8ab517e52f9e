"""`embedrec` in a child process with the hash embedders of test_rebuild.py and the fault
hooks the race tests and benchmarks/rebuild_race.py use, at the named points of a rebuild
(`embedrec.stores.lifecycle.generations.reached`):

- KILL_AT=point, KILL_AFTER=n: SIGKILL itself the nth time it reaches `point`;
- PAUSE_AT=point, PAUSE_AFTER=n, PAUSE_DIR=dir: the nth time, create dir/paused and wait
  until dir/go exists;
- SLOW_S=s: sleep s seconds at each `rebuild:ingesting` (a batch), as a real model would;
- LEASE_TTL_S=s: a timed lease (Qdrant server, Pinecone) lapses s seconds after its holder
  stops renewing it (default 30).

Run as `python -m tests.ingestion.rebuild_child ARGS...` from the repository root.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import embedrec.embedders
import embedrec.stores.lifecycle.generations as points
from embedrec.cli import main
from tests.ingestion.test_rebuild import hash_embedder

seen: Counter[str] = Counter()


def reached(point: str) -> None:
    seen[point] += 1
    if point == os.environ.get("KILL_AT") and seen[point] >= int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == os.environ.get("PAUSE_AT") and seen[point] == int(os.environ["PAUSE_AFTER"]):
        folder = Path(os.environ["PAUSE_DIR"])
        (folder / "paused").touch()
        while not (folder / "go").exists():
            time.sleep(0.02)
    if point == "rebuild:ingesting" and os.environ.get("SLOW_S"):
        time.sleep(float(os.environ["SLOW_S"]))


if __name__ == "__main__":
    embedrec.embedders.get_embedder = hash_embedder
    if os.environ.get("LEASE_TTL_S"):
        from embedrec.stores.lifecycle import (
            timed_lease as timed,  # only where asked: old trees have none
        )

        timed.TTL_S = float(os.environ["LEASE_TTL_S"])
    points.reached = reached
    sys.exit(main(sys.argv[1:]))
