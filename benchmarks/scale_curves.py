"""Scale curves: build time, memory, single-query p50 and recall@10 of FAISS IVF-PQ, FAISS
HNSW and qdrant+edge stores on clustered synthetic vectors at growing N, against FAISS's
bytes-per-vector formulas.

    nice -n 10 .venv/bin/python benchmarks/scale_curves.py \\
        [--sizes 100000,300000,1000000,3000000,10000000] [--kinds ivfpq,hnsw,edge] \\
        [--dim 64] [--budget-s 840] [--out docs/scale] [--keep]

Each (kind, N) runs in a child process of its own, so that its peak RSS is its own; sizes
run in rising order, every kind at one size before the next size. A size whose predicted
wall time (a power law fitted to the kind's measured sizes) does not fit in what is left of
`--budget-s` is not run; the curves are then carried to the largest size by that fit and
drawn dashed, marked "fitted" in the CSV/JSON. `--keep` keeps the points an earlier run
wrote to `--out` and measures only the others, so that runs of ~15 minutes add up.

Per point: the store built through embedrec (`open_store`, `upsert` in chunks of 100k with
no metadata, `flush()`: FAISS trains IVF-PQ there and saves; qdrant+edge builds its HNSW
there), at each store's default search params; `build_s` is upsert + flush (wall) and
`build_cpu_s` the CPU time the child spent on it, all its threads (on a shared machine the
wall time moves with the load, the CPU time much less); `load1_build_start` and `load1` are
the load averages at the build's start and after the queries; memory is the
RSS the store adds after its build (`rss_bytes_per_vector`, the data kept aside) and its
peak during the build (`peak_rss_mb`, from the kernel's high-water mark, reset before the
build), and the bytes its files take on disk (`disk_bytes_per_vector`); p50 of 200 single
queries (`store.search(q, 10)`) after 20 to warm up; recall@10 of those queries against
exact search (distance-tie-aware). Children run FAISS on one OpenMP thread unless
`OMP_NUM_THREADS` says otherwise: on a shared machine FAISS's threads spin-wait, and one
IVF-PQ query (its coarse quantizer's scan, split over threads) took 29 ms instead of 0.2.
Formulas, per vector (d = dim): FAISS HNSW{M}
`d*4 + 2*M*4` (the vectors and level 0's links, which FAISS's wiki gives as the index size),
IVF-PQ `m*nbits/8 + 8` (codes and ids in the inverted lists) `+ d*4` (embedrec's IVF-PQ
keeps a flat refine stage), qdrant+edge `d*4 + 2*m*4` (Qdrant's level 0 holds 2m links).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10
QUERIES = 200
WARM = 20
CHUNK = 100_000
HNSW_M = 32
KINDS = {
    "ivfpq": "faiss:{path}?index=IVF,PQ{pq}",
    "hnsw": f"faiss:{{path}}?index=HNSW{HNSW_M}",
    "edge": f"qdrant+edge:{{path}}?m={HNSW_M}&ef_construct=100",
}
LABELS = {"ivfpq": "FAISS IVF-PQ (+refine)", "hnsw": "FAISS HNSW32", "edge": "qdrant+edge m=32"}


def formula_bytes(kind: str, dim: int) -> float:
    """FAISS's bytes per vector for the kind (see the module docstring)."""
    if kind == "ivfpq":
        return dim // 4 + 8 + dim * 4  # PQ{dim/4}x8 codes, ids, refine
    return dim * 4 + 2 * HNSW_M * 4


def synthetic_chunk(start: int, n: int, dim: int) -> np.ndarray:
    """Rows start..start+n of the clustered set (256 centres, noise 0.5), the same rows at
    any N: each chunk of CHUNK rows has its own seed."""
    centres = np.random.default_rng(0).standard_normal((256, dim)).astype(np.float32)
    parts, row = [], start
    while row < start + n:
        block, offset = divmod(row, CHUNK)
        rng = np.random.default_rng(1_000 + block)
        cluster = rng.integers(0, 256, CHUNK)
        noise = rng.standard_normal((CHUNK, dim), dtype=np.float32)
        take = min(CHUNK - offset, start + n - row)
        sl = slice(offset, offset + take)
        parts.append(centres[cluster[sl]] + 0.5 * noise[sl])
        row += take
    return np.concatenate(parts)


def queries_for(dim: int) -> np.ndarray:
    """Queries from the same clusters, never stored (rows past any N measured)."""
    return synthetic_chunk(10**9, QUERIES, dim)


def rss() -> tuple[int, int]:
    """(current, peak) resident bytes of this process."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def settle() -> None:
    """Collect garbage and hand the allocator's free memory back to the kernel, so that RSS
    counts what is live (glibc keeps freed blocks once its mmap threshold has risen)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> None:
    """Start the kernel's high-water mark again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tie_aware_recall(found: list[list[float]], truth: np.ndarray) -> float:
    """Hits no farther than the k-th true neighbour (scores are negated squared L2)."""
    hits = 0
    for scores, row in zip(found, truth, strict=True):
        threshold = row[-1] * (1 + 1e-4) + 1e-6
        hits += sum(1 for s in scores if -s <= threshold)
    return hits / truth.size


def child(kind: str, n: int, dim: int) -> dict:
    """One point of the curves, measured in this process."""
    import faiss

    from embedrec import open_store

    data = synthetic_chunk(0, n, dim)
    queries = queries_for(dim)
    truth, _ = faiss.knn(queries, data, K, faiss.METRIC_L2)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        path = Path(tmp) / "store"
        uri = KINDS[kind].format(path=path, pq=dim // 4)
        settle()
        before, _ = rss()
        reset_peak()
        load_start = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), time.process_time()
        store = open_store(uri, dim=dim, metric="l2")
        for at in range(0, n, CHUNK):
            block = data[at : at + CHUNK]
            store.upsert([str(i) for i in range(at, at + len(block))], block)
        store.flush()
        build_s = time.perf_counter() - start
        build_cpu_s = time.process_time() - cpu_start
        settle()
        after, peak = rss()
        times, found = [], []
        for i, q in enumerate(np.concatenate([queries[:WARM], queries])):
            t0 = time.perf_counter()
            hits = store.search(q, K)[0]
            if i >= WARM:
                times.append(time.perf_counter() - t0)
                found.append(list(hits.scores))
        on_disk = disk_bytes(path)
        store.close()
    return {
        "kind": kind,
        "n": n,
        "dim": dim,
        "status": "measured",
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "rss_bytes_per_vector": (after - before) / n,
        "peak_rss_mb": (peak - before) / 2**20,
        "disk_bytes_per_vector": on_disk / n,
        "formula_bytes_per_vector": formula_bytes(kind, dim),
        "p50_us": float(np.median(times)) * 1e6,
        "recall@10": tie_aware_recall(found, truth),
        "load1_build_start": load_start,
        "load1": os.getloadavg()[0],
    }


MIN_FIT = 2
"""Measured sizes a kind needs before its curves are carried further (one point only
predicts wall time, linearly, to decide whether the next size fits the budget)."""
POWER_FITTED = ("build_s", "p50_us", "wall_s")
"""Carried past the measured sizes as power laws; recall is never extrapolated."""
AFFINE_FITTED = ("rss_bytes_per_vector", "disk_bytes_per_vector")
"""Carried as fixed bytes plus bytes per vector (the slope, `*_marginal`): a store's fixed
costs (a WAL, centroids, tables) make the small sizes' per-vector figure high."""


def power_fit(ns: list[int], values: list[float]) -> tuple[float, float]:
    """(a, b) of value = a * n**b, least squares in log-log; one point: b = 1."""
    if len(ns) == 1:
        return values[0] / ns[0], 1.0
    b, log_a = np.polyfit(np.log(ns), np.log(np.maximum(values, 1e-9)), 1)
    return float(math.exp(log_a)), float(b)


def fitted_point(points: list[dict], n: int) -> dict:
    """A kind's figures at n from the curves fitted to its measured points."""
    ns = [p["n"] for p in points]
    out = {k: points[-1][k] for k in ("kind", "dim", "formula_bytes_per_vector")}
    out.update({"n": n, "status": "fitted"})
    for key in POWER_FITTED:
        a, b = power_fit(ns, [p[key] for p in points])
        out[key] = a * n**b
        out[f"{key}_exponent"] = b
    if len(points) >= MIN_FIT:
        for key in AFFINE_FITTED:
            slope, fixed = np.polyfit(ns, [p[key] * p["n"] for p in points], 1)
            out[key] = (fixed + slope * n) / n
            out[key.replace("_per_vector", "_marginal")] = float(slope)
    return out


def run_child(kind: str, n: int, dim: int, timeout: float) -> dict | str:
    """The child's figures, or why there are none."""
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", str(n), "--dim", str(dim)]
    try:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"over the {timeout:.0f} s left"
    if done.returncode:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - start
    return row


def measure(
    kinds: list[str], sizes: list[int], dim: int, budget_s: float, kept: list[dict]
) -> list[dict]:
    """Measured points, every kind at a size before the next size, within the budget;
    `kept` points (an earlier run's) are not measured again."""
    deadline = time.monotonic() + budget_s
    measured: dict[str, list[dict]] = {k: [] for k in kinds}
    for row in sorted(kept, key=lambda r: r["n"]):
        if row["kind"] in measured and row["status"] == "measured" and row["dim"] == dim:
            measured[row["kind"]].append(row)
    stopped: dict[str, str] = {}
    for n in sizes:
        for kind in kinds:
            if kind in stopped or any(p["n"] == n for p in measured[kind]):
                continue
            left = deadline - time.monotonic()
            points = measured[kind]
            predicted = fitted_point(points, n)["wall_s"] if points else 0.0
            if predicted > left:
                stopped[kind] = f"N={n:,}: predicted {predicted:.0f} s, {left:.0f} s left"
                print(f"{kind}: not run at {stopped[kind]}", flush=True)
                continue
            row = run_child(kind, n, dim, left)
            if isinstance(row, str):
                stopped[kind] = f"N={n:,}: {row}"
                print(f"{kind}: stopped at {stopped[kind]}", flush=True)
                continue
            points.append(row)
            print(json.dumps(row), flush=True)
            points.sort(key=lambda r: r["n"])
    rows = [p for k in kinds for p in sorted(measured[k], key=lambda r: r["n"])]
    for kind in kinds:
        points = sorted(measured[kind], key=lambda r: r["n"])
        if len(points) >= MIN_FIT:
            rows += [fitted_point(points, n) for n in sizes if n > points[-1]["n"]]
    return rows


def write_tables(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_curves.json").write_text(json.dumps(rows, indent=2))
    columns = ["kind", "n", "dim", "status", "build_s", "build_cpu_s", "rss_bytes_per_vector"]
    columns += ["disk_bytes_per_vector", "formula_bytes_per_vector", "peak_rss_mb"]
    columns += [
        "p50_us",
        "recall@10",
        "load1_build_start",
        "load1",
        "rss_bytes_marginal",
        "disk_bytes_marginal",
    ]
    with (out / "scale_curves.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in columns})


def _cell(value: object) -> object:
    return f"{value:.4g}" if isinstance(value, float) else value


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = [
        ("build_s", "build (upsert + flush), s", True),
        ("rss_bytes_per_vector", "RSS added per vector, bytes", False),
        ("disk_bytes_per_vector", "on disk per vector, bytes", True),
        ("p50_us", "single-query p50, µs", True),
        ("recall@10", "recall@10 (default params)", False),
        ("build_cpu_s", "build CPU time (all threads), s", True),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, title, log_y) in zip(axes.flat, panels, strict=False):
        for i, kind in enumerate(dict.fromkeys(r["kind"] for r in rows)):
            colour = f"C{i}"
            mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["n"])
            got = [r for r in mine if r["status"] == "measured" and key in r]
            if not got:  # build_cpu_s: not recorded by the first runs
                continue
            ax.plot(
                [r["n"] for r in got], [r[key] for r in got], "o-", color=colour, label=LABELS[kind]
            )
            fit = [got[-1], *(r for r in mine if r["status"] == "fitted" and key in r)]
            if len(fit) > 1:
                ax.plot(
                    [r["n"] for r in fit],
                    [r[key] for r in fit],
                    "o--",
                    color=colour,
                    mfc="none",
                    alpha=0.7,
                )
            if key.endswith("_per_vector"):
                ax.axhline(got[-1]["formula_bytes_per_vector"], color=colour, ls=":", lw=1)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("N vectors")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    dim = rows[0]["dim"]
    fig.suptitle(
        f"Scale curves, synthetic {dim}-d (dashed, hollow: fitted, a power law; memory: "
        "fixed + per-vector bytes; dotted: FAISS's formula bytes/vector)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "scale_curves.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000,3000000,10000000")
    parser.add_argument("--kinds", default="ivfpq,hnsw,edge")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=840.0, help="wall time for all runs")
    parser.add_argument("--out", type=Path, default=Path("docs/scale"))
    parser.add_argument(
        "--keep", action="store_true", help="keep the points measured in --out, measure the rest"
    )
    parser.add_argument("--child", choices=sorted(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.child:
        print(json.dumps(child(args.child, sizes[0], args.dim)))
        return
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {sorted(KINDS)}")
    previous = args.out / "scale_curves.json"
    kept = json.loads(previous.read_text()) if args.keep and previous.exists() else []
    rows = measure(kinds, sizes, args.dim, args.budget_s, kept)
    if not any(r["status"] == "measured" for r in rows):
        sys.exit("no size could be measured in the budget")
    write_tables(rows, args.out)
    plot(rows, args.out)
    print(f"wrote {args.out}/scale_curves.csv, .json and .png")


if __name__ == "__main__":
    main()
