"""Incremental updates in place against a fresh build of the same data (issue #17, item 3).

    .venv/bin/python benchmarks/churn.py [--n 20000] [--levels 0.1,0.3,0.6] \
        [--backends hnsw,ivf,edge] [--dataset fashion|synthetic] [--out docs/churn]

Each backend (`faiss:?index=HNSW32`, `faiss:?index=IVF,Flat` with nlist from the data size,
`qdrant+edge:`) gets a store of `--n` base vectors (Fashion-MNIST-784 train images by default,
L2), built and flushed on disk. Churn is then applied to it in place, cumulatively, up to each
level: level c means c x n operations since the build, each on a different original record,
alternately an update (same id, a new vector) and a delete plus an insert (a new id, a new
vector); the new vectors are train images the base did not hold. So the store always holds n
records, and a FAISS store has c x n dead slots (a dead share of c / (1 + c)) until compacted.

At each level, against the same final data:

- `incremental`: the churned store, flushed. FAISS's auto-compaction is switched off for it
  (COMPACT_DEAD_FRACTION set past 1), so the figures show what dead slots cost;
- `compacted` (FAISS only): a copy of that store directory with `compact()` and `flush()`;
- `rebuild`: a new store built from the final data and flushed.

Measured for each: recall@10 (tie-aware, against exact search over the final data, 1,000
test images as queries), p50 latency of single-query `store.search` (the variants timed
query by query in rotating order, so the shared machine's load hits all of them alike), disk
bytes of the store directory after flush, the FAISS index's own bytes (`serialize_index`),
and "rss": the resident-memory growth of a fresh process that opens the flushed store and
answers the latency queries (qdrant-edge maps its segments, so pages it never touches are not
counted). Plus the seconds the churn writes, the flush, the compaction and the rebuild took.

From the FAISS figures it derives the auto-compaction threshold: the dead share at which an
uncompacted store's p50 latency first reaches LATENCY_TOLERANCE x the rebuild's or its
recall@10 falls RECALL_TOLERANCE below it, interpolated linearly from (0, no penalty) over
the measured levels, for the more sensitive of HNSW and IVF.

Writes churn.json, churn.csv, table.md and one PNG per metric into `--out`; `--replot` writes
them again from a saved churn.json without measuring.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from common import exact_neighbours, fashion, recall, synthetic
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

import embedrec.stores.faiss.store as faiss_store
from embedrec import open_store
from embedrec.common.progress import Progress

K = 10
URIS = {
    "hnsw": "faiss:{path}?index=HNSW32",
    "ivf": "faiss:{path}?index=IVF,Flat",
    "edge": "qdrant+edge:{path}",
}
LATENCY_TOLERANCE = 1.5
"""Any tombstone at all sends every FAISS search down the masked path, which costs 1.1-1.3x
a plain search with no slot dead (measured with every slot allowed): a tolerance below that
would compact, at HNSW's cost of a full graph build, at every flush that saw a delete."""
RECALL_TOLERANCE = 0.01
OP_BATCH = 1000
COLOURS = {"incremental": "C0", "compacted": "C1", "rebuild": "C2"}
METRICS = (
    ("recall", "recall@10"),
    ("p50_ms", "p50 single-query latency (ms)"),
    ("p50_vs_rebuild", "p50 latency / the fresh build's (same run)"),
    ("rss_mb", "RSS growth, serving process (MB)"),
    ("disk_mb", "disk after flush (MB)"),
)


@dataclass
class Plan:
    """The base records, the new vectors and, in order, the churn operations."""

    base: np.ndarray
    pool: np.ndarray
    targets: np.ndarray  # the original record each operation touches
    queries: np.ndarray

    def final(self, ops: int) -> tuple[list[str], np.ndarray]:
        """The ids and vectors a store holds after the first `ops` operations."""
        vectors = dict(enumerate(self.base))
        keyed: dict[str, np.ndarray] = {str(i): v for i, v in vectors.items()}
        for j in range(ops):
            target = str(self.targets[j])
            if j % 2 == 0:
                keyed[target] = self.pool[j]
            else:
                del keyed[target]
                keyed[f"new-{j}"] = self.pool[j]
        return list(keyed), np.stack(list(keyed.values()))

    def apply(self, store, start: int, stop: int) -> None:
        """Operations start..stop on `store`, OP_BATCH at a time: deletes, then upserts."""
        for lo in range(start, stop, OP_BATCH):
            js = range(lo, min(lo + OP_BATCH, stop))
            gone = [str(self.targets[j]) for j in js if j % 2]
            if gone:
                store.delete(gone)
            ids = [str(self.targets[j]) if j % 2 == 0 else f"new-{j}" for j in js]
            store.upsert(ids, self.pool[list(js)])


def make_plan(dataset: str, n: int, most: float, nq: int) -> Plan:
    ops = round(most * n)
    if dataset == "fashion":
        train, queries = fashion(None, nq)
        if n + ops > len(train):
            raise SystemExit(f"--n {n} with {most:.0%} churn needs {n + ops} > {len(train)} images")
        base, pool = train[:n], train[n : n + ops]
    else:
        data, queries, _ = synthetic(n + ops, nq)
        base, pool = data[:n], data[n:]
    targets = np.random.default_rng(0).permutation(n)[:ops]
    return Plan(base, pool, targets, queries)


def build(uri: str, ids: list[str], vectors: np.ndarray):
    store = open_store(uri, dim=vectors.shape[1], metric="l2")
    for lo in range(0, len(ids), 10_000):
        store.upsert(ids[lo : lo + 10_000], vectors[lo : lo + 10_000])
    store.flush()
    return store


def step(progress: Progress, what: str) -> None:
    """Name the step on the bar, and print it too where there is no bar (a log)."""
    progress.describe(what)
    if progress.bar is None:
        print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def index_mb(store) -> float | None:
    index = getattr(store, "_index", None)
    return None if index is None else faiss.serialize_index(index).size / 2**20


def layout(store) -> str:
    """What the store holds beside its live records: a FAISS index's dead slots, or an edge
    shard's segments with and without an HNSW graph (a plain one is scanned exactly) and the
    vectors in graphs."""
    table = getattr(store, "_table", None)
    if table is not None:
        return f"{table.dead:,} dead"
    kinds = [
        json.loads(f.read_text())["config"]["vector_data"][""]["index"]["type"]
        for f in Path(store.engine.path).rglob("segment.json")
    ]
    graphs = kinds.count("hnsw")
    vectors = store.shard.info().indexed_vectors_count  # dead ones included until a vacuum
    return f"{graphs} graph + {len(kinds) - graphs} plain seg, {vectors:,} in graphs"


def p50s(stores: dict, queries: np.ndarray, passes: int = 3) -> dict[str, float]:
    """Median single-query latency (ms) of each store, timed query by query with the order of
    the stores rotating, so that load on a shared machine hits them alike."""
    names = list(stores)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm up: caches, lazily built masks
        stores[name].search(queries[:20], K)
    for p in range(passes):
        for n, q in enumerate(queries):
            shift = (n + p) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                stores[name].search(q, K)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def rss_mb(uri: str, queries_file: Path) -> float:
    """Resident-memory growth of a fresh process that opens the flushed store at `uri` and
    answers the latency queries one at a time."""
    out = subprocess.run(
        [sys.executable, __file__, "--probe", uri, "--probe-queries", str(queries_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def probe(uri: str, queries_file: Path) -> None:
    import qdrant_edge  # noqa: F401  (both engines' libraries loaded before the baseline)

    queries = np.load(queries_file)
    before = _vm_rss_mb()
    store = open_store(uri)
    for q in queries:
        store.search(q, K)
    print(f"{_vm_rss_mb() - before:.2f}")
    store.close()


@dataclass
class Level:
    """One backend at one churn level: the stores to compare and their directories."""

    backend: str
    level: float
    ops: int
    root: Path

    def uri(self, variant: str) -> str:
        return URIS[self.backend].format(path=self.root / variant)


def measure_level(lv: Level, plan: Plan, inc, done: int, args, progress: Progress) -> dict:
    """Churn the incremental store up to this level, build what it is compared with, and
    measure every variant. Returns the row, and leaves the incremental store closed."""
    row: dict = {"backend": lv.backend, "level": lv.level, "ops": lv.ops}
    row["apply_s"] = timed(lambda: plan.apply(inc, done, lv.ops))
    row["flush_s"] = timed(inc.flush)
    ids, vectors = plan.final(lv.ops)
    stores = {"incremental": inc}
    seconds = {"incremental": row["apply_s"] + row["flush_s"]}
    if lv.backend != "edge":
        step(progress, f"{lv.backend} {lv.level:.0%}: compacting a copy")
        shutil.copytree(lv.root / "incremental", lv.root / "compacted")
        cmp = open_store(lv.uri("compacted"))
        seconds["compacted"] = timed(lambda: (cmp.compact(), cmp.flush()))
        stores["compacted"] = cmp
    step(progress, f"{lv.backend} {lv.level:.0%}: rebuilding")
    seconds["rebuild"] = timed(
        lambda: stores.__setitem__("rebuild", build(lv.uri("rebuild"), ids, vectors))
    )
    step(progress, f"{lv.backend} {lv.level:.0%}: measuring")
    truth = exact_neighbours(vectors, plan.queries, K)
    latency_queries = plan.queries[: args.latency_queries]
    p50 = p50s(stores, latency_queries)
    qfile = lv.root / "queries.npy"
    np.save(qfile, latency_queries)
    variants = {}
    for name, store in stores.items():
        variants[name] = {
            "recall": recall(store.search(plan.queries, K), truth),
            "p50_ms": p50[name],
            "index_mb": index_mb(store),
            "seconds": seconds[name],
            "layout": layout(store),
            "count": store.count(),
        }
        store.close()
    for name, figures in variants.items():
        figures["disk_mb"] = disk_mb(lv.root / name)
        figures["rss_mb"] = rss_mb(lv.uri(name), qfile)
    for name in ("compacted", "rebuild"):
        shutil.rmtree(lv.root / name, ignore_errors=True)
    row["dead_share"] = lv.ops / (len(plan.base) + lv.ops) if lv.backend != "edge" else None
    row["variants"] = variants
    return row


def run_backend(backend: str, plan: Plan, args, progress: Progress) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"churn-{backend}-", dir=args.tmp) as tmp:
        root = Path(tmp)
        n = len(plan.base)
        step(progress, f"{backend}: building the base store")
        first = Level(backend, 0.0, 0, root)
        start = time.perf_counter()
        inc = build(first.uri("incremental"), [str(i) for i in range(n)], plan.base)
        base_s = time.perf_counter() - start
        done = 0
        for level in args.levels:
            lv = Level(backend, level, round(level * n), root)
            row = measure_level(lv, plan, inc, done, args, progress)
            row["base_build_s"] = base_s
            rows.append(row)
            done = lv.ops
            progress.update(1, backend=backend, level=f"{level:.0%}")
            inc = open_store(lv.uri("incremental"))
        inc.close()
    return rows


def crossing(rows: list[dict]) -> float | None:
    """The dead share at which the uncompacted store first costs LATENCY_TOLERANCE x the
    rebuild's p50 or RECALL_TOLERANCE of its recall, interpolated linearly from no penalty
    at no dead slots; None when no measured level reaches it."""
    points = [(0.0, 1.0, 0.0)]
    for row in sorted(rows, key=lambda r: r["level"]):
        inc, reb = row["variants"]["incremental"], row["variants"]["rebuild"]
        points.append(
            (row["dead_share"], inc["p50_ms"] / reb["p50_ms"], reb["recall"] - inc["recall"])
        )
    for (s0, l0, r0), (s1, l1, r1) in itertools.pairwise(points):
        shares = []
        if l1 >= LATENCY_TOLERANCE:
            shares.append(s0 + (s1 - s0) * max(0.0, LATENCY_TOLERANCE - l0) / (l1 - l0))
        if r1 >= RECALL_TOLERANCE:
            shares.append(s0 + (s1 - s0) * max(0.0, RECALL_TOLERANCE - r0) / (r1 - r0))
        if shares:
            return min(shares)
    return None


def flat_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        reb = row["variants"]["rebuild"]
        dead = None if row["dead_share"] is None else 0.0  # edge has no dead slots to count
        for name, v in row["variants"].items():
            out.append(
                {
                    "backend": row["backend"],
                    "level": row["level"],
                    "dead_share": row["dead_share"] if name == "incremental" else dead,
                    "variant": name,
                    **{k: v[k] for k in ("recall", "p50_ms", "rss_mb", "disk_mb", "index_mb")},
                    "p50_vs_rebuild": v["p50_ms"] / reb["p50_ms"],
                    "disk_vs_rebuild": v["disk_mb"] / reb["disk_mb"],
                    "seconds": v["seconds"],
                    "count": v["count"],
                    "layout": v["layout"],
                }
            )
    return out


def report(flat: list[dict], console: Console) -> None:
    table = Table(title="Incremental churn against a fresh build of the same data")
    cols = (
        "backend",
        "churn",
        "dead",
        "variant",
        "recall@10",
        "p50 ms",
        "p50 x reb",
        "rss MB",
        "disk MB",
        "disk x reb",
        "index MB",
        "seconds",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in flat:
        table.add_row(
            r["backend"],
            f"{r['level']:.0%}",
            "" if r["dead_share"] is None else f"{r['dead_share']:.1%}",
            r["variant"],
            f"{r['recall']:.4f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p50_vs_rebuild']:.2f}",
            f"{r['rss_mb']:.1f}",
            f"{r['disk_mb']:.1f}",
            f"{r['disk_vs_rebuild']:.2f}",
            "" if r["index_mb"] is None else f"{r['index_mb']:.1f}",
            f"{r['seconds']:.1f}",
            r["layout"],
        )
    console.print(table)
    console.print(
        "seconds: incremental = the churn writes + flush; compacted = compact() + flush(); "
        "rebuild = a new store's upserts + flush. rss: growth of a fresh process that opens "
        "the flushed store and answers the latency queries."
    )


def markdown(flat: list[dict]) -> str:
    """The table as Markdown, for docs/churn.md."""
    head = (
        "| backend | churn | dead | variant | recall@10 | p50 ms | p50 x rebuild | RSS MB "
        "| disk MB | disk x rebuild | seconds | layout |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in flat:
        dead = "" if r["dead_share"] is None else f"{r['dead_share']:.1%}"
        lines.append(
            f"| {r['backend']} | {r['level']:.0%} | {dead} | {r['variant']} | {r['recall']:.4f} "
            f"| {r['p50_ms']:.3f} | {r['p50_vs_rebuild']:.2f} | {r['rss_mb']:.1f} "
            f"| {r['disk_mb']:.1f} | {r['disk_vs_rebuild']:.2f} | {r['seconds']:.1f} "
            f"| {r['layout']} |"
        )
    return "\n".join(lines) + "\n"


def plot(flat: list[dict], out: Path) -> list[str]:
    """One PNG per metric: a panel per backend, churn level on x, a line per variant."""
    backends = list(dict.fromkeys(r["backend"] for r in flat))
    made = []
    for key, label in METRICS:
        fig = Figure(figsize=(4 * len(backends), 3.4), layout="constrained")
        axes = fig.subplots(1, len(backends), squeeze=False)[0]
        for ax, backend in zip(axes, backends, strict=True):
            rows = [r for r in flat if r["backend"] == backend]
            for variant in dict.fromkeys(r["variant"] for r in rows):
                pts = [(r["level"], r[key]) for r in rows if r["variant"] == variant]
                ax.plot(*zip(*pts, strict=True), "o-", color=COLOURS[variant], label=variant)
            ax.set_title(backend)
            ax.set_xlabel("churn (share of records touched)")
            ax.xaxis.set_major_formatter("{x:.0%}")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(label)
        axes[0].legend(fontsize=8)
        name = f"{key}.png"
        fig.savefig(out / name, dpi=110)
        made.append(name)
    return made


def plot_threshold(rows: list[dict], thresholds: dict, out: Path) -> str:
    """The figure that sets COMPACT_DEAD_FRACTION: an uncompacted FAISS store's p50 over a
    fresh build's against its dead share, with the tolerance and where each family crosses."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for backend, share in thresholds.items():
        pts = [(0.0, 1.0)] + [
            (
                r["dead_share"],
                r["variants"]["incremental"]["p50_ms"] / r["variants"]["rebuild"]["p50_ms"],
            )
            for r in rows
            if r["backend"] == backend
        ]
        (line,) = ax.plot(*zip(*pts, strict=True), marker="o", label=f"FAISS {backend}")
        if share is not None:
            ax.axvline(share, color=line.get_color(), linestyle=":", linewidth=1)
    ax.axhline(LATENCY_TOLERANCE, color="grey", linestyle="--", linewidth=1, label="tolerance")
    ax.set_xlabel("dead share of slots (uncompacted)")
    ax.set_ylabel("p50 latency / fresh build's")
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "p50_ratio_vs_dead_share.png", dpi=110)
    return "p50_ratio_vs_dead_share.png"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["fashion", "synthetic"], default="fashion")
    parser.add_argument("--n", type=int, default=20_000, help="records in the store")
    parser.add_argument("--levels", default="0.1,0.3,0.6", help="churn levels, ascending")
    parser.add_argument("--backends", default="hnsw,ivf,edge", help="of " + ",".join(URIS))
    parser.add_argument("--queries", type=int, default=1000, help="recall queries")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("docs/churn"))
    parser.add_argument("--tmp", type=Path, default=None, help="where the stores go")
    parser.add_argument(
        "--replot", action="store_true", help="table and plots again from --out's churn.json"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-queries", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.levels = [float(x) for x in args.levels.split(",")]
    args.backends = args.backends.split(",")
    unknown = set(args.backends) - set(URIS)
    if unknown or args.levels != sorted(args.levels):
        parser.error(f"unknown backends {sorted(unknown)} or levels not ascending")
    return args


def measure(args: argparse.Namespace) -> tuple[list[dict], dict]:
    plan = make_plan(args.dataset, args.n, args.levels[-1], args.queries)
    rows: list[dict] = []
    started, load = time.perf_counter(), os.getloadavg()[0]
    with Progress(len(args.backends) * len(args.levels), "churn", "levels", every_s=0) as bar:
        for backend in args.backends:
            rows += run_backend(backend, plan, args, bar)
    meta = {
        "command": " ".join(["benchmarks/churn.py", *sys.argv[1:]]),
        "dataset": args.dataset,
        "n": args.n,
        "dim": int(plan.base.shape[1]),
        "cpus": os.cpu_count(),
        "load_average_1m": [load, os.getloadavg()[0]],
        "wall_s": time.perf_counter() - started,
    }
    return rows, meta


def finish(rows: list[dict], meta: dict, out: Path, console: Console) -> None:
    """The table, the threshold each FAISS family's figures give, and the files."""
    flat = flat_rows(rows)
    report(flat, console)
    families = dict.fromkeys(r["backend"] for r in rows if r["backend"] != "edge")
    thresholds = {b: crossing([r for r in rows if r["backend"] == b]) for b in families}
    reached = [s for s in thresholds.values() if s is not None]
    meta.update(
        latency_tolerance=LATENCY_TOLERANCE,
        recall_tolerance=RECALL_TOLERANCE,
        thresholds=thresholds,
        compact_dead_fraction=math.floor(min(reached) * 20) / 20 if reached else None,
    )
    console.print(
        f"dead share where an uncompacted FAISS store costs >= {LATENCY_TOLERANCE:.2f}x the "
        f"rebuild's p50 or {RECALL_TOLERANCE} recall@10: "
        + ", ".join(f"{b} {'-' if s is None else f'{s:.1%}'}" for b, s in thresholds.items())
        + f"; COMPACT_DEAD_FRACTION (the smaller, rounded down to 0.05): "
        f"{meta['compact_dead_fraction']}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "churn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    with (out / "churn.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    (out / "table.md").write_text(markdown(flat))
    made = plot(flat, out)
    if thresholds:
        made.append(plot_threshold(rows, thresholds, out))
    console.print(f"wrote churn.json, churn.csv, table.md and {', '.join(made)} into {out}")


def main() -> None:
    args = parse_args()
    faiss_store.COMPACT_DEAD_FRACTION = float("inf")  # the benchmark compacts explicitly
    if args.probe:
        probe(args.probe, args.probe_queries)
        return
    console = Console(width=170)
    if args.replot:
        saved = json.loads((args.out / "churn.json").read_text())
        rows, meta = saved["rows"], saved["meta"]
    else:
        rows, meta = measure(args)
    finish(rows, meta, args.out, console)


if __name__ == "__main__":
    main()
