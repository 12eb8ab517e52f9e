"""Calibration reaches any target the index can reach: each search param's grid runs on to the
setting where the index is exhaustive (nprobe = nlist, ef = the live count), and a target
that even that misses is reported with what would meet it. The plot is written only where
--plot says, and --ids that match nothing say so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedrec.cli import main
from embedrec.stores import StoreInfo, open_store
from embedrec.stores.recall import exact as ann
from embedrec.stores.recall.calibrate import CalibrateSettings, calibrate, extended, save_defaults
from embedrec.stores.recall.report import verdict

DIM, K = 16, 10


def clustered(n: int, seed: int) -> np.ndarray:
    """Draws around 40 fixed centres: the same distribution for every seed."""
    centres = np.random.default_rng(99).standard_normal((40, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, 40, n)] + 1.0 * rng.standard_normal((n, DIM)).astype("f4")


def held_out_recall(store, base: np.ndarray, queries: np.ndarray) -> float:
    """Recall@K of `search()` with no params (the calibrated defaults) on new queries."""
    hits = store.search(queries, K)
    found = np.array([[int(i) for i in h.ids] for h in hits])
    truth, _ = ann.exact_knn(base, queries, K, "l2")
    return float(ann.recall_tie_aware(truth, ann.distances("l2", queries, base, found)).mean())


def test_grids_run_on_to_the_exhaustive_setting() -> None:
    assert extended([1, 2, 4], 20, 1000) == [1, 2, 4, 6, 9, 14, 20]
    assert extended([1, 8, 64, 256], 40, 1000) == [1, 8, 40]  # none past nlist
    assert extended([10, 20], 100_000, 300) == [10, 20, 30, 45, 68, 102, 153, 230, 300]
    assert extended([10, 20, 500], 100_000, 300) == [10, 20, 500]  # the config's own top
    assert extended([2, 8], None, 300) == [2, 8]  # k_factor: no exhaustive setting


@pytest.mark.parametrize("kind, param", [("IVF,Flat", "nprobe"), ("HNSW8&efConstruction=16", "ef")])
def test_a_target_past_the_configured_grid_is_reached_and_holds_on_new_queries(
    kind: str, param: str
) -> None:
    """The configured grid stops at nprobe=2 / ef=4, well short of 0.99; the old grid
    reported "no setting of the grid meets" here."""
    base = clustered(3000, seed=0)
    store = open_store(f"faiss:?index={kind}", dim=DIM, metric="l2")
    store.upsert([str(i) for i in range(len(base))], base)
    store.flush()
    cfg = CalibrateSettings(target_recall=0.99, k=K, queries=200, grids={param: [1, 2, 4]})
    cal = calibrate(store, cfg, progress=False)
    assert cal.chosen is not None, verdict(cal)
    assert cal.chosen.params[param] > 4 and cal.chosen.params[param] <= cal.exhaustive[param]
    store.set_info(StoreInfo("test:v", "test", DIM, "vector", "l2"))
    save_defaults(store, cal)
    assert held_out_recall(store, base, clustered(300, seed=1)) >= 0.99


def test_a_quantised_index_that_cannot_reach_the_target_says_what_would() -> None:
    base = clustered(3000, seed=0)
    store = open_store("faiss:?index=IVF,PQ2x4", dim=DIM, metric="l2")
    store.upsert([str(i) for i in range(len(base))], base)
    store.flush()
    grids = {"nprobe": [1, 4], "k_factor": [1]}
    cfg = CalibrateSettings(target_recall=0.999, k=K, queries=100, grids=grids)
    cal = calibrate(store, cfg, progress=False)
    assert cal.chosen is None and cal.tops["nprobe"] == cal.exhaustive["nprobe"]
    assert "IVF,Flat" in verdict(cal) and "quantised" in verdict(cal)


def test_plot_only_where_asked_and_ids_that_match_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "store"
    with open_store(f"faiss:{path}?index=HNSW8", dim=DIM, metric="l2") as store:
        store.upsert([str(i) for i in range(300)], clustered(300, seed=0))
    config = tmp_path / "cal.toml"
    config.write_text("[calibrate]\nqueries = 30\n[calibrate.grids]\nef = [10, 40]\n")
    monkeypatch.chdir(tmp_path)
    argv = ["calibrate", f"faiss:{path}", "--config", str(config), "--dry-run", "--quiet"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] is None
    assert not list(tmp_path.glob("*.png"))  # was calibrate.png in the working directory
    assert main([*argv, "--plot", "out/cal.png"]) == 2  # no such folder: one line, exit 2
    assert main([*argv, "--plot", "cal.png"]) == 0
    assert (tmp_path / "cal.png").stat().st_size > 0
    ids = tmp_path / "ids.txt"
    ids.write_text("nope\nnada\nzip\n")
    capsys.readouterr()
    assert main([*argv, "--ids", str(ids)]) == 2
    err = capsys.readouterr().err
    assert f"none of the 3 ids in {ids} are in the store, which holds 300 records" in err
