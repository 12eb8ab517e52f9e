"""qdrant+edge against the raw qdrant-edge API, and against FAISS HNSW at equal recall@10.

    .venv/bin/python benchmarks/qdrant_edge_store.py [--n 60000] [--queries 1000] [--repeat 3]

On Fashion-MNIST-784 (the ann-benchmarks set: 60k base, 10k queries, L2), `--n` base
vectors and `--queries` queries:

1. Overhead: one QdrantEdgeStore, built (upsert, then `flush()` runs the HNSW optimizer);
   a batch search through `store.search` against the same shard's `query_batch`, with the
   same ef, the raw side building its requests and reading each hit's id, score and
   payload (what the store hands back as a Hit). Best of `--repeat`, interleaved.
2. Equal recall: the edge store and a FAISS HNSW store (`faiss:?index=HNSW{m}`, in memory)
   built with the same M and ef_construction; an ef sweep for each, then, per recall@10
   target, the smallest ef that reaches it and its batch throughput.
3. Filtered: a 1%-selective equality filter on an indexed integer field (`bucket`),
   recall@10 against exact filtered ground truth, whether every query got k hits, and
   throughput, on both stores at their default ef.

`--label-recall` instead measures the filter that correlates with the vectors, `{"label": 3}`
(10% of Fashion-MNIST, one class): recall@10 against exact filtered search, the share of
queries short of k and the filtered throughput of the edge store, with the label left to be
indexed at the first filtered search ("lazy") and declared before the graph is built
("declared", where the store has `declare_fields`); then, for the lazy store, again after the
`flush()` that rebuilds its graph. "graph" is the engine's own filtered graph search at the
default ef, without the store's planning. Run it against the code before a change with
`PYTHONPATH=<that tree>`.

`--filters [synthetic|fashion|both]` instead builds an edge store (payload indexes declared
before the graph) on 100k x 128 clustered synthetic vectors and/or Fashion-MNIST and, for
random filters at 1/10/50% and one correlated with the vectors (the synthetic cluster, the
Fashion-MNIST label, about 10%), prints recall@10 of the batch and of single queries, whether
every query got k hits, and the filtered time against unfiltered for a batch of 1,000 and a
loop of 200 single queries (`common.filtered_figures`, paired rounds, medians). `--stores
DIR` keeps the built stores there, so that a later run measures without building again.
`--cpu-time` times in CPU seconds of the process (all threads, the engine's included), which
preemption on a busy machine does not inflate as it does wall time.

Recall is distance-tie-aware (a hit counts when no farther than the k-th true neighbour),
as ann-benchmarks computes it. Both engines search with their own thread pools on every core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
import numpy as np
import qdrant_edge as qe
from common import (
    Dataset,
    best_of,
    exact_neighbours,
    fashion,
    fashion_set,
    filtered_figures,
    filtered_table,
    recall,
    synthetic_set,
)
from rich.console import Console
from rich.table import Table

from embedrec import open_store
from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.stores import Hits

K = 10
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TARGETS = (0.90, 0.95, 0.99, 0.995)


def build(uri: str, base: np.ndarray, metadata: list[dict]):
    start = time.perf_counter()
    store = open_store(uri, dim=base.shape[1], metric="l2")
    store.upsert([str(i) for i in range(len(base))], base, metadata)
    store.flush()
    return store, time.perf_counter() - start


def overhead(store, queries: np.ndarray, ef: int, repeat: int) -> dict:
    shard = store.shard
    params = qe.SearchParams(hnsw_ef=ef)

    def raw() -> list:
        requests = [
            qe.QueryRequest(limit=K, query=qe.Query.Nearest(q), params=params, with_payload=True)
            for q in queries.tolist()
        ]
        results = shard.query_batch(qe.QueryBatchRequest(requests))
        return [[(p.id, p.score, p.payload) for p in points] for points in results]

    def ours() -> None:
        store.search(queries, K, params={"ef": ef})

    raw_s, store_s = [], []
    for _ in range(repeat):  # interleaved, so that drifting load hits both alike
        raw_s.append(best_of(1, raw))
        store_s.append(best_of(1, ours))
    return {
        "ef": ef,
        "raw_s": min(raw_s),
        "store_s": min(store_s),
        "ratio": min(store_s) / min(raw_s),
    }


def sweep(store, queries: np.ndarray, truth: np.ndarray, repeat: int) -> list[dict]:
    rows = []
    for ef in EFS:
        hits = store.search(queries, K, params={"ef": ef})
        seconds = best_of(repeat, lambda ef=ef: store.search(queries, K, params={"ef": ef}))
        rows.append({"ef": ef, "recall": recall(hits, truth), "qps": len(queries) / seconds})
    return rows


def at_recall(rows: list[dict], target: float) -> dict | None:
    return next((r for r in rows if r["recall"] >= target), None)


def filtered(store, queries, truth, flt, repeat: int) -> dict:
    hits = store.search(queries, K, filter=flt)
    seconds = best_of(repeat, lambda: store.search(queries, K, filter=flt))
    return {
        "recall": recall(hits, truth),
        "all_k": all(len(h) == K for h in hits),
        "short": float(np.mean([len(h) < K for h in hits])),
        "qps": len(queries) / seconds,
    }


def graph_recall(store, queries: np.ndarray, truth: np.ndarray) -> float:
    """Recall of the shard's own filtered graph search for label 3 at its default ef."""
    cond = qe.FieldCondition(key='"label"', range=qe.RangeFloat(gte=3.0, lte=3.0))
    requests = [
        qe.QueryRequest(limit=K, query=qe.Query.Nearest(q), filter=qe.Filter(must=[cond]))
        for q in queries.tolist()
    ]
    answers = store.shard.query_batch(qe.QueryBatchRequest(requests))
    hits = [Hits([str(p.id) for p in a], [-(p.score**2) for p in a]) for a in answers]
    return recall(hits, truth)


def label_recall(args: argparse.Namespace, console: Console) -> dict:
    base, queries = fashion(args.n, args.queries)
    labels = load_fashion_mnist().train_labels[: len(base)]
    metadata = [{"label": int(v)} for v in labels]
    keep = labels == 3
    truth = exact_neighbours(base[keep], queries, K)
    flt = {"label": 3}
    console.print(f"label=3: {keep.mean():.1%} of {len(base):,} x {base.shape[1]}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("lazy", "declared"):
            uri = f"qdrant+edge:{tmp}/{mode}?m={args.m}&ef_construct={args.ef_construct}"
            store = open_store(uri, dim=base.shape[1], metric="l2")
            if mode == "declared":
                if not hasattr(store, "declare_fields"):
                    store.close()
                    continue
                store.declare_fields({"label": "int"})
            start = time.perf_counter()
            store.upsert([str(i) for i in range(len(base))], base, metadata)
            store.flush()
            build_s = time.perf_counter() - start
            rows[mode] = {"build_s": build_s, **filtered(store, queries, truth, flt, args.repeat)}
            rows[mode]["graph"] = graph_recall(store, queries, truth)
            if mode == "lazy":
                start = time.perf_counter()
                store.flush()  # rebuilds the graph with the label's links, where supported
                rebuild_s = time.perf_counter() - start
                row = filtered(store, queries, truth, flt, args.repeat)
                rows["lazy, flushed"] = {"build_s": rebuild_s, **row}
                rows["lazy, flushed"]["graph"] = graph_recall(store, queries, truth)
            store.close()
    table = Table(title='{"label": 3} on qdrant+edge (10%, correlated), default ef')
    for col in ("index", "recall@10", "short of k", "QPS", "graph recall", "build/flush s"):
        table.add_column(col, justify="right")
    for mode, r in rows.items():
        short = f"{r['short']:.1%}"
        cells = [f"{r['recall']:.4f}", short, f"{r['qps']:,.0f}", f"{r['graph']:.4f}"]
        table.add_row(mode, *cells, f"{r['build_s']:.1f}")
    console.print(table)
    return rows


def filter_store(
    folder: Path, args: argparse.Namespace, base: np.ndarray, metadata: list[dict], console: Console
):
    """The edge store of one dataset, with its payload indexes declared before the graph;
    opened as it is where `--stores` kept one from an earlier run."""
    uri = f"qdrant+edge:{folder}?m={args.m}&ef_construct={args.ef_construct}"
    if folder.exists():
        console.print(f"{folder.name}: kept from an earlier run")
        return open_store(f"qdrant+edge:{folder}", dim=base.shape[1], metric="l2")
    store = open_store(uri, dim=base.shape[1], metric="l2")
    store.declare_fields({f: "int" for f in metadata[0]})
    start = time.perf_counter()
    store.upsert([str(i) for i in range(len(base))], base, metadata)
    store.flush()
    console.print(f"{folder.name}: built in {time.perf_counter() - start:.1f} s")
    return store


def filter_costs(args: argparse.Namespace, console: Console) -> dict:
    jobs: dict[str, Callable[[], Dataset]] = {}
    if args.filters in ("synthetic", "both"):
        jobs[f"synthetic-{args.synthetic_n // 1000}k-128"] = lambda: synthetic_set(
            args.synthetic_n, 1000
        )
    if args.filters in ("fashion", "both"):
        jobs["fashion-mnist-784"] = fashion_set
    rows = {}
    for name, load in jobs.items():
        base, queries, metadata, filters = load()
        with tempfile.TemporaryDirectory() as tmp:
            folder = (args.stores or Path(tmp)) / f"{name}-m{args.m}-efc{args.ef_construct}"
            store = filter_store(folder, args, base, metadata, console)
            rows[name] = filtered_figures(store, base, queries, filters, args.repeat)
            store.close()
    title = f"Filtered qdrant+edge (m={args.m}) against unfiltered, default ef"
    console.print(filtered_table(title, rows))
    console.print("targets: recall >= 0.99 batch and single, k hits, single <= 3x unfiltered")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="base vectors (max 60,000)")
    parser.add_argument("--queries", type=int, default=1000, help="queries (max 10,000)")
    parser.add_argument("--m", type=int, default=32, help="HNSW M for both engines")
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--overhead-ef", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--label-recall", action="store_true", help='only the {"label": 3} filtered recall'
    )
    parser.add_argument(
        "--filters",
        choices=["synthetic", "fashion", "both"],
        help="only the filtered-query costs (random and correlated filters)",
    )
    parser.add_argument("--synthetic-n", type=int, default=100_000)
    parser.add_argument(
        "--stores",
        type=Path,
        help="with --filters: keep the built stores in this folder and reuse them next time",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time in CPU seconds of the whole process (every engine thread), not wall time",
    )
    args = parser.parse_args()
    if args.cpu_time:
        common.CLOCK = time.process_time
    console = Console(width=120)
    if args.filters:
        rows = filter_costs(args, console)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))
        return
    if args.label_recall:
        rows = label_recall(args, console)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))
        return

    base, queries = fashion(args.n, args.queries)
    n, dim = base.shape
    bucket = np.arange(n) % 100
    metadata = [{"bucket": int(b)} for b in bucket]
    truth = exact_neighbours(base, queries, K)
    flt, keep = {"bucket": 7}, bucket == 7
    ftruth = exact_neighbours(base[keep], queries, K)
    console.print(f"Fashion-MNIST-784: {n:,} base x {dim}, {len(queries):,} queries, k={K}")

    with tempfile.TemporaryDirectory() as tmp:
        m, efc = args.m, args.ef_construct
        edge, edge_build = build(
            f"qdrant+edge:{tmp}/edge?m={m}&ef_construct={efc}&indexes=bucket", base, metadata
        )
        console.print(f"qdrant+edge: built in {edge_build:.1f} s (upsert + optimize)")
        fstore, faiss_build = build(f"faiss:?index=HNSW{m}&efConstruction={efc}", base, metadata)
        console.print(f"faiss HNSW{m}: built in {faiss_build:.1f} s")

        result = {
            "n": n,
            "dim": dim,
            "queries": len(queries),
            "m": m,
            "ef_construct": efc,
            "build_s": {"qdrant+edge": edge_build, "faiss": faiss_build},
            "overhead": overhead(edge, queries, args.overhead_ef, args.repeat),
            "sweep": {
                "qdrant+edge": sweep(edge, queries, truth, args.repeat),
                "faiss": sweep(fstore, queries, truth, args.repeat),
            },
            "filter1%": {
                "qdrant+edge": filtered(edge, queries, ftruth, flt, args.repeat),
                "faiss": filtered(fstore, queries, ftruth, flt, args.repeat),
            },
        }
        edge.close()
        fstore.close()
    report(result, console)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def report(r: dict, console: Console) -> None:
    o = r["overhead"]
    console.print(
        f"[bold]overhead[/] (batch of {r['queries']:,}, ef {o['ef']}): store {o['store_s']:.3f} s"
        f" / raw qdrant-edge {o['raw_s']:.3f} s = [bold]{o['ratio']:.3f}x[/] (target <= 1.10)"
    )
    table = Table(title=f"recall@10 vs batch QPS: qdrant+edge m={r['m']} vs FAISS HNSW{r['m']}")
    for col in (
        "target",
        "edge ef",
        "edge recall",
        "edge QPS",
        "faiss ef",
        "faiss recall",
        "faiss QPS",
        "edge / faiss",
    ):
        table.add_column(col, justify="right")
    for target in TARGETS:
        e = at_recall(r["sweep"]["qdrant+edge"], target)
        f = at_recall(r["sweep"]["faiss"], target)
        cells = [f"{target:.3f}"]
        for row in (e, f):
            cells += (
                [str(row["ef"]), f"{row['recall']:.4f}", f"{row['qps']:,.0f}"]
                if row
                else ["-", "not reached", "-"]
            )
        cells.append(f"{e['qps'] / f['qps']:.2f}x" if e and f else "-")
        table.add_row(*cells)
    console.print(table)
    ft = Table(title="1%-selective filter on an indexed field, default ef")
    for col in ("store", "recall@10", "exactly k hits", "QPS"):
        ft.add_column(col, justify="right")
    for name, f in r["filter1%"].items():
        ft.add_row(name, f"{f['recall']:.4f}", "yes" if f["all_k"] else "NO", f"{f['qps']:,.0f}")
    console.print(ft)
    console.print(
        f"build: qdrant+edge {r['build_s']['qdrant+edge']:.1f} s, faiss {r['build_s']['faiss']:.1f}"
        " s; targets: overhead <= 1.10x, 1% filter recall@10 >= 0.95 with k hits"
    )


if __name__ == "__main__":
    main()
