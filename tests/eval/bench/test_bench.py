"""`embedrec bench` on tiny synthetic data: every output file, the figures' sanity, resume,
skips with reasons, and config validation."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from embedrec.eval.bench import commands as bench_commands
from embedrec.eval.bench import compare as bench
from embedrec.eval.bench.config import load_bench_config
from embedrec.eval.bench.report import operating_points
from embedrec.stores import REGISTRY

CONFIG = """
[run]
k = 5
clients = [2]
warmup = 2
threads = 1

[[datasets]]
name = "small"
kind = "synthetic"
n = 400
queries = 12
dim = 16
clusters = 8
scale_group = "g"

[[datasets]]
name = "bigger"
kind = "synthetic"
n = 800
queries = 12
dim = 16
clusters = 8
scale_group = "g"
stores = ["hnsw"]

[[datasets]]
name = "small-pca-8"
kind = "pca"
source = "small"
dim = 8
stores = ["flat"]

[[stores]]
name = "flat"
uri = "faiss:{dir}?index=Flat"

[[stores]]
name = "hnsw"
uri = "faiss:?index=HNSW8&efConstruction=8"
sweep = { ef = [5, 64] }

[[stores]]
name = "needs-env"
uri = "faiss:?index=Flat"
requires = ["EMBEDREC_TEST_NEVER_SET"]
"""


def run(config: Path, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    bench_commands.register(parser.add_subparsers())
    args = parser.parse_args(["bench", str(config), "--out", str(out), *extra])
    return args.func(args)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    config = root / "bench.toml"
    config.write_text(CONFIG)
    out = root / "out"
    assert run(config, out) == 0
    return config, out


@pytest.mark.slow  # one small bench, shared by the module: ~10-20 s
def test_a_bench_writes_every_output(finished):
    _, out = finished
    for name in (
        "results.json", "results.csv", "report.md", "recall_qps_small.png", "recall_qps_bigger.png",
        "latency_small.png", "scale_g.png", "pca_small.png",
    ):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    # small: flat + hnsw x 2; bigger: hnsw x 2; pca: flat
    assert sorted((r["dataset"], r["store"], r["param"]) for r in rows) == [
        ("bigger", "hnsw", "ef=5"), ("bigger", "hnsw", "ef=64"), ("small", "flat", "-"),
        ("small", "hnsw", "ef=5"), ("small", "hnsw", "ef=64"), ("small-pca-8", "flat", "-"),
    ]  # fmt: skip
    assert data["skipped"] == [
        {"dataset": d, "store": "needs-env", "reason": "set EMBEDREC_TEST_NEVER_SET to include it"}
        for d in ("small",)
    ]
    assert len(pd.read_csv(out / "results.csv")) == len(rows)
    report = (out / "report.md").read_text()
    for section in ("At a glance", "Scale", "Dimensionality", "Harness overhead", "Skipped"):
        assert f"## {section}" in report
    assert "EMBEDREC_TEST_NEVER_SET" in report


@pytest.mark.slow  # one small bench, shared by the module: ~10-20 s
def test_figures_are_sane(finished):
    _, out = finished
    rows = {
        (r["dataset"], r["store"], r["param"]): r
        for r in json.loads((out / "results.json").read_text())["rows"]
    }
    flat = rows[("small", "flat", "-")]
    assert flat["recall"] == flat["recall_by_id"] == 1.0  # exact search finds the truth
    assert flat["disk_mb"] > 0 and rows[("small", "hnsw", "ef=5")]["disk_mb"] is None
    assert rows[("small", "hnsw", "ef=64")]["recall"] >= rows[("small", "hnsw", "ef=5")]["recall"]
    pca = rows[("small-pca-8", "flat", "-")]
    assert pca["dim"] == 8 and pca["full_dim"] == 16 and pca["recall"] < 1.0  # lossy reduction
    for r in rows.values():
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["qps_1"] > 0 and r["qps_batch"] > 0 and r["qps_2"] > 0
        assert r["build_s"] >= 0 and r["ingest_s"] > 0 and r["rss_growth_mb"] is not None
        assert 0 < r["harness_us_per_query"] < 1000 * r["mean_ms"]


@pytest.mark.slow  # one small bench, shared by the module: ~10-20 s
def test_a_rerun_resumes_and_runs_only_what_is_missing(finished, tmp_path, monkeypatch):
    config, out = finished
    lines = (out / bench.RESULTS).read_text().splitlines()
    resumed = tmp_path / "out"
    resumed.mkdir()
    dropped = json.loads(lines[-1])
    (resumed / bench.RESULTS).write_text("\n".join(lines[:-1]) + "\n")
    assert run(config, resumed) == 0
    again = (resumed / bench.RESULTS).read_text().splitlines()
    assert again[:-1] == lines[:-1]  # finished work untouched
    assert json.loads(again[-1])["key"] == dropped["key"]  # only the missing one re-measured

    def no_worker(*args, **kwargs):
        raise AssertionError("a finished bench started a worker")

    monkeypatch.setattr(bench, "_run_worker", no_worker)
    assert run(config, resumed) == 0
    assert (resumed / bench.RESULTS).read_text().splitlines() == again


def test_operating_point_is_the_fastest_row_reaching_the_target():
    base = {"dataset_id": "d", "store": "s"}
    rows = [
        {**base, "recall": 0.9, "qps_1": 900.0},
        {**base, "recall": 0.96, "qps_1": 500.0},
        {**base, "recall": 0.99, "qps_1": 300.0},
    ]
    (point,) = operating_points(rows, 0.95)
    assert point["qps_1"] == 500.0 and point["reached"]
    (point,) = operating_points(rows, 0.995)
    assert point["recall"] == 0.99 and not point["reached"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('source = "small"', 'source = "nope"'),
        ('stores = ["flat"]', 'stores = ["nope"]'),
    ],
)
def test_config_errors_name_the_bad_reference(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace(edit, message))
    with pytest.raises(ValueError, match="nope"):
        load_bench_config(path)


def test_quick_needs_a_quick_section(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(CONFIG)
    with pytest.raises(ValueError, match=r"no \[quick\] section"):
        load_bench_config(path).for_quick()


TINY = """
[run]
k = 3
clients = [2]
warmup = 1
threads = 1

[[datasets]]
name = "tiny"
kind = "synthetic"
n = 120
queries = 4
dim = 8
clusters = 4
"""


def _bench(tmp_path: Path, stores: str) -> bench.Outcome:
    from rich.console import Console

    path = tmp_path / "b.toml"
    path.write_text(TINY + stores)
    console = Console(file=io.StringIO())
    return bench.run_bench(load_bench_config(path), tmp_path / "out", console=console)


def test_stores_that_cannot_run_here_are_skipped_with_the_reason(tmp_path, monkeypatch):
    backend = ("embedrec.stores.nowhere", "NowhereStore", "embedrec[nowhere]")
    monkeypatch.setitem(REGISTRY, "nowhere", backend)
    outcome = _bench(
        tmp_path,
        '[[stores]]\nname = "absent"\nuri = "nowhere:x"\n\n'
        '[[stores]]\nname = "unknown"\nuri = "mystery:x"\n',
    )
    reasons = {s["store"]: s["reason"] for s in outcome.skipped}
    assert "embedrec.stores.nowhere does not import" in reasons["absent"]
    assert "pip install 'embedrec[nowhere]'" in reasons["absent"]
    assert "unknown store scheme 'mystery'" in reasons["unknown"]
    assert outcome.rows == []


@pytest.mark.slow  # a worker process with the Pinecone SDK against the loopback
def test_a_loopback_store_is_served_from_the_package(tmp_path):
    outcome = _bench(
        tmp_path,
        '[[stores]]\nname = "pl"\nuri = "pinecone://{name}?create=1"\nloopback = "pinecone"\n',
    )
    assert outcome.skipped == []
    (row,) = outcome.rows
    assert row["store"] == "pl" and row["service"] == "pinecone loopback"
    assert row["recall"] == 1.0  # an exact store
