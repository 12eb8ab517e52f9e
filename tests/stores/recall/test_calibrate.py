"""`embedrec calibrate`: the chosen setting, its persistence as search defaults, and how
`search()` uses them (explicit params win, filters still raise the effort)."""

import json
from pathlib import Path

import numpy as np
import pytest

from embedrec.cli import main
from embedrec.stores import ConfigError, IdError, StoreInfo, open_store
from embedrec.stores.faiss import planner
from embedrec.stores.recall import exact as ann
from embedrec.stores.recall.calibrate import (
    CalibrateSettings,
    Calibration,
    Measurement,
    calibrate,
    choose,
    grid,
    load_calibrate_config,
    lower_bound,
    save_defaults,
    without_own,
)
from embedrec.stores.recall.report import bench_check

CONFIG = Path(__file__).parents[3] / "configs" / "calibrate.toml"
N, DIM, K = 3000, 16, 10
GRID = [10, 20, 40, 80, 160, 320]
SETTINGS = CalibrateSettings(target_recall=0.95, k=K, queries=150, grids={"ef": GRID})


def _vectors(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, DIM)).astype(np.float32)
    return centres[rng.integers(0, 64, n)] + rng.standard_normal((n, DIM)).astype(np.float32)


def _info() -> StoreInfo:
    return StoreInfo("test:vectors", "test-vectors", DIM, "vector", "l2")


@pytest.fixture(scope="module")
def hnsw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, weakly built HNSW store on which ef=10 is well short of recall 0.95."""
    path = tmp_path_factory.mktemp("cal") / "hnsw"
    with open_store(f"faiss:{path}?index=HNSW8&efConstruction=32", dim=DIM, metric="l2") as s:
        s.upsert([str(i) for i in range(N)], _vectors())
        s.set_info(_info())
    return path


def _recall(store, queries: np.ndarray, base: np.ndarray, **kwargs) -> float:
    hits = store.search(queries, K, **kwargs)
    found = np.array([[int(i) for i in h.ids] for h in hits])
    truth, _ = ann.exact_knn(base, queries, K, "l2")
    return float(ann.recall_tie_aware(truth, ann.distances("l2", queries, base, found)).mean())


def test_calibrate_picks_and_keeps_an_ef_that_meets_the_target(hnsw_dir: Path) -> None:
    base = _vectors()
    queries = _vectors(200, seed=1)  # new points, not stored: held out of calibration
    with open_store(f"faiss:{hnsw_dir}") as store:
        assert _recall(store, queries, base, params={"ef": 10}) < 0.95  # the test can fail
        cal = calibrate(store, SETTINGS, progress=False)
        assert cal.search_params == ["ef"] and cal.records == N and cal.queries == 150
        assert not cal.measurements[0].meets and cal.chosen is not None
        chosen = cal.chosen.params["ef"]
        assert chosen > 10
        assert cal.chosen is next(s for s in cal.measurements if s.meets)  # the cheapest
        assert all(s.lower <= s.recall for s in cal.measurements)
        save_defaults(store, cal)
        assert cal.stored
    with open_store(f"faiss:{hnsw_dir}") as store:  # persisted with the store
        assert dict(store.info.search_defaults) == {"ef": chosen}
        plain = store.search(queries, K)
        at_chosen = store.search(queries, K, params={"ef": chosen})
        at_ten = store.search(queries, K, params={"ef": 10})
        assert [h.ids for h in plain] == [h.ids for h in at_chosen]
        assert [h.ids for h in plain] != [h.ids for h in at_ten]  # explicit params win
        assert _recall(store, queries, base) >= 0.95  # new queries meet the target too


def _with_defaults(defaults: dict) -> StoreInfo:
    return StoreInfo("test:vectors", "test-vectors", DIM, "vector", "l2", defaults)


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    """Record the search params each call of IndexSearch.`name` gets (and returns, for `raised`)."""
    calls: list = []
    original = getattr(planner.IndexSearch, name)

    def spy(self, *args):
        out = original(self, *args)
        chosen = next(a for a in args if isinstance(a, planner.SearchParams))
        calls.append((chosen.ef, out.ef if isinstance(out, planner.SearchParams) else None))
        return out

    monkeypatch.setattr(planner.IndexSearch, name, spy)
    return calls


def test_defaults_apply_under_params_and_filters_raise_from_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = _spy(monkeypatch, "unfiltered")
    raised = _spy(monkeypatch, "raised")
    store = open_store("faiss:?index=HNSW8", dim=DIM, metric="l2")
    store.upsert([str(i) for i in range(N)], _vectors(), [{"part": i % 3} for i in range(N)])
    store.flush()
    query = _vectors(1, seed=2)
    store.set_info(_info())
    store.search(query, K)
    assert plain[-1][0] == 64  # no defaults yet: the URI's ef
    store.set_info(_with_defaults({"ef": 12, "recall": 0.95}))  # "recall": not a param
    store.search(query, K)
    assert plain[-1][0] == 12  # set_info refreshed the defaults
    store.search(query, K, params={"ef": 200})
    assert plain[-1][0] == 200  # a call's own params win
    store.search(query, K, filter={"part": 0})  # a third of the records
    assert raised[-1][0] == 12  # the raise starts from the default ...
    assert raised[-1][1] >= 3 * K > 12  # ... and is not capped by it


def test_held_out_search_leaves_the_query_out_and_does_not_start_from_it(
    hnsw_dir: Path,
) -> None:
    base = _vectors()
    rows = np.arange(0, N, 7)
    ids = [str(r) for r in rows]
    dist, found = ann.exact_knn(base, base[rows], K + 1, "l2")
    truth = without_own(dist, found, rows)

    def recall(hits) -> float:
        got = np.array([[int(i) for i in h.ids[:K]] for h in hits])
        return float(ann.recall_tie_aware(truth, ann.distances("l2", base[rows], base, got)).mean())

    with open_store(f"faiss:{hnsw_dir}") as store:
        held = store.search_held_out(ids, K, params={"ef": 10})
        assert all(len(h) == K and own not in h.ids for h, own in zip(held, ids, strict=True))
        plain = store.search(base[rows], K + 1, params={"ef": 10})
        dropped = [h.take([n for n, i in enumerate(h.ids) if i != own][:K])
                   for h, own in zip(plain, ids, strict=True)]  # fmt: skip
        # only dropping the own hit reads higher: the search starts at the query's own node
        assert recall(dropped) > recall(held) + 0.03
        with pytest.raises(IdError, match="no record"):
            store.search_held_out(["nope"], K)
    flat = open_store("faiss:?index=Flat", dim=DIM, metric="l2")
    flat.upsert([str(i) for i in range(50)], _vectors(50))
    (hits,) = flat.search_held_out(["3"], 5)
    assert "3" not in hits.ids and len(hits) == 5


def test_held_out_recall_tracks_new_queries_not_the_optimistic_self_query(
    hnsw_dir: Path,
) -> None:
    base = _vectors()
    fresh = _vectors(300, seed=3)
    with open_store(f"faiss:{hnsw_dir}") as store:
        cal = calibrate(store, SETTINGS.model_copy(update={"extra_steps": 0}), progress=False)
        first = cal.measurements[0]
        new = _recall(store, fresh, base, params={"ef": 10})
        assert abs(first.recall - new) < 0.05  # held out: close to what new queries get


def test_no_search_param_store_reports_recall_only_and_info_less_store_is_refused() -> None:
    flat = open_store("faiss:?index=Flat", dim=DIM, metric="l2")
    flat.upsert([str(i) for i in range(200)], _vectors(200))
    cal = calibrate(flat, SETTINGS, progress=False)
    assert cal.search_params == [] and len(cal.measurements) == 1 and cal.chosen is None
    assert cal.measurements[0].recall == pytest.approx(1.0)
    hnsw = open_store("faiss:?index=HNSW8", dim=DIM, metric="l2")
    hnsw.upsert([str(i) for i in range(500)], _vectors(500))
    cal = calibrate(hnsw, SETTINGS.model_copy(update={"queries": 30}), progress=False)
    assert cal.chosen is not None
    with pytest.raises(ConfigError, match=r"no store info.*ingest it with embedrec"):
        save_defaults(hnsw, cal)
    ivf = open_store("faiss:?index=IVF,Flat", dim=DIM, metric="l2")
    ivf.upsert([str(i) for i in range(30)], _vectors(30))  # too few to train: exact for now
    with pytest.raises(ValueError, match="not built yet"):
        calibrate(ivf, SETTINGS, progress=False)


def test_lower_bound_grid_choice_and_own_column() -> None:
    recalls = np.array([1.0, 0.8] * 50)
    assert lower_bound(recalls, 0.95) == pytest.approx(0.9 - 1.6449 * 0.1005 / 10, abs=1e-4)
    assert lower_bound(np.ones(10), 0.95) == 1.0
    assert grid({"nprobe": [1, 4], "k_factor": [2, 8]}) == [
        {"nprobe": 1, "k_factor": 2}, {"nprobe": 1, "k_factor": 8},
        {"nprobe": 4, "k_factor": 2}, {"nprobe": 4, "k_factor": 8},
    ]  # fmt: skip
    cal = Calibration("u", 100, 10, K, 0.9, 0.95, ["nprobe", "k_factor"])
    cal.measurements = [Measurement({"nprobe": 1}, 0.95, 0.92, 2.0, True),
                    Measurement({"nprobe": 4}, 0.99, 0.98, 1.0, True)]  # fmt: skip
    assert choose(cal) is cal.measurements[1]  # several search params: the fastest that meets it
    cal.search_params = ["nprobe"]
    assert choose(cal) is cal.measurements[0]  # one search param: the first in grid order
    values = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 2.5]])
    rows = np.array([[7, 3, 4], [1, 2, 5]])
    assert without_own(values, rows, np.array([7, 9])).tolist() == [[1.0, 2.0], [0.5, 1.5]]


def test_bench_check_counts_grid_steps() -> None:
    cfg = CalibrateSettings(target_recall=0.95, grids={"ef": GRID})
    rows = [{"dataset": "d", "store": "s", "params": {"ef": e}, "recall": r}
            for e, r in ((10, 0.9), (20, 0.96), (40, 0.99))]  # fmt: skip
    rows.append({"dataset": "d", "store": "s", "params": {}, "recall": 0.99,
                 "calibrated": {"ef": 40}})  # fmt: skip
    (check,) = bench_check(rows, cfg)
    assert check["cheapest_on_bench"] == "ef=20" and check["steps_above"] == 1
    assert check["bench_recall"] == 0.99


def test_cli_stores_defaults_writes_plot_and_json(
    hnsw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "cal.toml"
    config.write_text("[calibrate]\nqueries = 40\n[calibrate.grids]\nef = [10, 40, 160]\n")
    png = tmp_path / "cal.png"
    uri = f"faiss:{hnsw_dir}"
    argv = ["calibrate", uri, "--config", str(config), "--plot", str(png), "--json", "--quiet"]
    assert main([*argv, "--target-recall", "0.9", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stored"] is False and out["chosen"] is not None and png.stat().st_size > 0
    assert main([*argv, "--target-recall", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stored"] is True
    with open_store(uri) as store:
        assert dict(store.info.search_defaults) == out["chosen"]
    capped = tmp_path / "capped.toml"
    capped.write_text(config.read_text().replace("queries = 40", "queries = 40\nmax_effort = 160"))
    argv[3] = str(capped)
    assert main([*argv, "--target-recall", "1.0", "--k", "50"]) == 1  # past max_effort
    out = json.loads(capsys.readouterr().out)
    assert out["met"] is False and out["grid_tops"] == {"ef": 160}
    assert load_calibrate_config(CONFIG).grids["ef"][0] == 10


BENCH = """
[run]
k = 10
clients = []
warmup = 2
threads = 1
calibrate = "{calibrate}"

[[datasets]]
name = "small"
kind = "synthetic"
n = 2000
queries = 60
dim = 16
clusters = 32

[[stores]]
name = "hnsw"
uri = "faiss:?index=HNSW8&efConstruction=16"
sweep = {{ ef = [10, 20, 40, 80] }}
"""


@pytest.mark.slow  # one bench worker (a process) builds, calibrates and measures a store
def test_bench_measures_a_store_at_its_calibrated_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    calibrate_toml = tmp_path / "cal.toml"
    calibrate_toml.write_text(
        "[calibrate]\ntarget_recall = 0.95\nqueries = 100\n[calibrate.grids]\n"
        "ef = [10, 20, 40, 80]\n"
    )
    config = tmp_path / "bench.toml"
    config.write_text(BENCH.format(calibrate=calibrate_toml))
    out = tmp_path / "out"
    assert main(["bench", str(config), "--out", str(out), "--json", "--quiet"]) == 0
    figures = json.loads(capsys.readouterr().out)
    (check,) = figures["calibration"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    (row,) = [r for r in rows if r["param"].startswith("calibrated")]
    assert row["params"] == {} and row["calibrated"] == {"ef": int(check["chosen"][3:])}
    swept = {r["params"]["ef"]: r["recall"] for r in rows if r["params"]}
    assert row["recall"] == swept[row["calibrated"]["ef"]]  # no params: the calibrated ef
    assert row["calibrated"]["ef"] > 10 and swept[10] < 0.95  # it can fail
    assert check["bench_recall"] >= 0.95 and check["steps_above"] in (0, 1)
