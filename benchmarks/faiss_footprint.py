"""One side of a FAISS footprint measure, run alone in a fresh process so that its peak RSS
is its own; `faiss_store.py --footprint` runs raw FAISS and the store in turns and prints
their ratios. It imports only numpy, FAISS and, for the store, embedrec's stores.

    python faiss_footprint.py build raw|store KIND N DIM DIR
    python faiss_footprint.py reopen raw|store DIR

build: N random vectors in batches of 10,000 (the store's with three metadata fields: a
string, an int, a float), added to a fresh index (raw: `index.add`; the store: `upsert`),
then saved in DIR (raw: `write_index`; the store: `close`). reopen: read what build saved
(raw: `read_index`; the store: `open_store`) and answer 1,000 queries, k=10. Prints one
JSON line: seconds per phase (the adds' also in CPU seconds, `add_cpu_s`, which a shared
machine's load moves less than wall time) and the process's peak RSS in MiB. The store's modules are
imported before the reopen is timed, as FAISS's are.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

BATCH = 10_000
GENRES = ("Comedy", "Drama", "Action", "Horror")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(n: int, dim: int):
    for start in range(0, n, BATCH):
        rng = np.random.default_rng(start)
        yield start, rng.standard_normal((min(BATCH, n - start), dim)).astype(np.float32)


def metadata(start: int, count: int) -> list[dict]:
    return [
        {"genre": GENRES[i % 4], "year": 1950 + i % 70, "score": (i % 100) / 10}
        for i in range(start, start + count)
    ]


def build(side: str, kind: str, n: int, dim: int, folder: Path) -> dict:
    spent = cpu = 0.0
    if side == "raw":
        index = faiss.index_factory(dim, kind, faiss.METRIC_L2)
        for _, vectors in batches(n, dim):
            start, start_cpu = time.perf_counter(), time.process_time()
            index.add(vectors)
            spent += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
        start = time.perf_counter()
        faiss.write_index(index, str(folder / "raw.faiss"))
        saved = time.perf_counter() - start
        return {"add_s": spent, "add_cpu_s": cpu, "save_s": saved, "peak_mib": peak_mib()}
    from embedrec import open_store  # the store side only: the raw side never loads it

    store = open_store(f"faiss:{folder / 'store'}?index={kind}&metric=l2", dim=dim)
    for first, vectors in batches(n, dim):
        ids = [str(i) for i in range(first, first + len(vectors))]
        meta = metadata(first, len(vectors))
        start, start_cpu = time.perf_counter(), time.process_time()
        store.upsert(ids, vectors, meta)
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    start = time.perf_counter()
    store.close()
    saved = time.perf_counter() - start
    return {"add_s": spent, "add_cpu_s": cpu, "save_s": saved, "peak_mib": peak_mib()}


def reopen(side: str, folder: Path) -> dict:
    if side == "store":  # its modules load before the clock starts, as FAISS's did
        import embedrec.stores.faiss.store  # noqa: F401
    start = time.perf_counter()
    if side == "raw":
        index = faiss.read_index(str(folder / "raw.faiss"))
        opened = time.perf_counter() - start
        queries = np.random.default_rng(99).standard_normal((1000, index.d)).astype(np.float32)
        start = time.perf_counter()
        index.search(queries, 10)
    else:
        from embedrec import open_store  # the store side only

        store = open_store(f"faiss:{folder / 'store'}")
        opened = time.perf_counter() - start
        queries = np.random.default_rng(99).standard_normal((1000, store.dim)).astype(np.float32)
        start = time.perf_counter()
        store.search(queries, 10)
    return {"open_s": opened, "query_s": time.perf_counter() - start, "peak_mib": peak_mib()}


if __name__ == "__main__":
    what, side = sys.argv[1], sys.argv[2]
    if what == "build":
        kind, n, dim, folder = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        print(json.dumps(build(side, kind, n, dim, Path(folder))))
    else:
        print(json.dumps(reopen(side, Path(sys.argv[3]))))
