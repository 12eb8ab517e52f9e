import json
from pathlib import Path

import numpy as np
import pytest

from embedrec import open_store
from embedrec.cli import main
from embedrec.common.config import ConfigFileError
from embedrec.data.dataset import load_dataset
from embedrec.embedders.two_tower import TwoTowerConfig, fit_two_tower
from embedrec.eval.drift.config import DriftSection, check, load_drift_config
from embedrec.eval.drift.gauges import (
    Vectors,
    coverage,
    gini,
    jaccard,
    kendall_tau_b,
    neighbours_both,
    overlap_at_k,
    recommend_both,
    recommendation_counts,
    sample_indices,
)
from embedrec.eval.models.config import load_experiment_config

CONFIG = Path(__file__).parents[3] / "configs" / "two_tower.toml"
K = 10

# ------------------------------------------------------------------------------ pure metrics


def test_overlap_and_jaccard_of_known_lists() -> None:
    a = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    b = np.array([[3, 2, 1, 0], [4, 5, 8, 9]])
    np.testing.assert_allclose(overlap_at_k(a, b, 4), [1.0, 0.5])
    np.testing.assert_allclose(jaccard(a, b), [1.0, 2 / 6])
    short = np.array([[0, 1, -1, -1]])
    np.testing.assert_allclose(overlap_at_k(short, np.array([[1, 2, 3, -1]]), 4), [0.25])
    np.testing.assert_allclose(jaccard(short, np.array([[1, 2, -1, -1]])), [1 / 3])


def test_kendall_tau_b() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert kendall_tau_b(x, x * 10 + 1) == pytest.approx(1.0)
    assert kendall_tau_b(x, -x) == pytest.approx(-1.0)
    # pairs (1,2) (1,3) concordant, (2,3) discordant: (2 - 1) / 3
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(1 / 3)
    # tau-b with a tie in y: 2 concordant, 0 discordant, 3 untied in x, 2 untied in y
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([1.0, 2, 2])) == pytest.approx(
        2 / np.sqrt(3 * 2)
    )
    assert np.isnan(kendall_tau_b(x, np.ones(4)))


def test_gini_of_uniform_and_concentrated_lists() -> None:
    n = 50
    uniform = np.arange(100).reshape(10, 10) % n  # every item twice
    counts = recommendation_counts(uniform, n)
    assert counts.tolist() == [2] * n
    assert gini(counts) == pytest.approx(0.0)
    assert coverage(uniform, n) == 1.0
    concentrated = np.zeros((10, 10), dtype=int)  # item 0 in every slot
    assert gini(recommendation_counts(concentrated, n)) == pytest.approx((n - 1) / n)
    assert coverage(concentrated, n) == 1 / n
    half = np.arange(100).reshape(10, 10) % (n // 2)  # half the catalog, evenly
    assert gini(recommendation_counts(half, n)) == pytest.approx(0.5)


def test_sample_indices_is_seeded_and_sorted() -> None:
    a, b = sample_indices(1000, 50, 3), sample_indices(1000, 50, 3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 50 and (np.diff(a) > 0).all()
    assert not np.array_equal(a, sample_indices(1000, 50, 4))
    np.testing.assert_array_equal(sample_indices(5, 50, 3), np.arange(5))


# ------------------------------------------------------------------------------ comparisons


def _vectors(rng: np.random.Generator, n_users: int = 300, n_items: int = 500) -> Vectors:
    return Vectors(
        rng.standard_normal((n_users, 16)).astype(np.float32),
        rng.standard_normal((n_items, 16)).astype(np.float32),
    )


def _seen(rng: np.random.Generator, n_users: int, n_items: int) -> list[np.ndarray]:
    return [rng.choice(n_items, size=20, replace=False) for _ in range(n_users)]


@pytest.fixture
def live() -> tuple[Vectors, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return _vectors(rng), _seen(rng, 300, 500)


def test_a_model_against_itself_agrees_fully(live) -> None:
    v, seen = live
    rec = recommend_both(v, v, seen, K, progress=False)
    assert (rec.overlap == 1).all() and (rec.tau == 1).all()
    for row, s in zip(rec.old, seen, strict=True):
        assert not set(row.tolist()) & set(s.tolist())  # seen items left out
    nn = neighbours_both(v.items, v.items, np.arange(100), K, progress=False)
    assert (nn.jaccard == 1).all()
    assert not (nn.old == np.arange(100)[:, None]).any()  # an item is not its own neighbour


def test_a_perturbed_copy_agrees_less_and_shuffled_items_only_by_chance(live) -> None:
    v, seen = live
    rng = np.random.default_rng(1)
    noisy = Vectors(
        v.users + 0.3 * rng.standard_normal(v.users.shape).astype(np.float32),
        v.items + 0.3 * rng.standard_normal(v.items.shape).astype(np.float32),
    )
    shuffled = Vectors(v.users, v.items[rng.permutation(len(v.items))])
    near = recommend_both(v, noisy, seen, K, progress=False)
    far = recommend_both(v, shuffled, seen, K, progress=False)
    chance = K / near.candidates
    assert 0.3 < near.overlap.mean() < 0.95
    assert abs(far.overlap.mean() - chance) < 0.02
    # over the union, items one model ranks top and the other does not are discordant
    # pairs: tau falls below 0 as the lists part, and far below when they share nothing
    assert -0.3 < np.nanmean(near.tau) < 0.9
    assert np.nanmean(far.tau) < np.nanmean(near.tau) - 0.3
    assert np.nanmean(far.tau) < -0.3
    sample = np.arange(200)
    assert 0.2 < neighbours_both(v.items, noisy.items, sample, K, False).jaccard.mean() < 0.95
    assert neighbours_both(v.items, shuffled.items, sample, K, False).jaccard.mean() < 0.05


# ------------------------------------------------------------------------------ config


def test_thresholds_pass_fail_and_unmeasured(tmp_path: Path) -> None:
    path = tmp_path / "drift.toml"
    path.write_text("[drift]\nmin_overlap = 0.3\nmax_gini_increase = 0.1\n")
    cfg = load_drift_config(path)
    results = check({"overlap_mean": 0.25, "gini_increase": 0.05}, cfg)
    assert [(r["threshold"], r["passed"]) for r in results] == [
        ("min_overlap", False),
        ("max_gini_increase", True),
    ]
    assert check({"gini_increase": 0.2}, cfg)[0]["passed"] is None  # stores: no overlap
    path.write_text("[drift]\nmin_overlap = 0.3\nmin_overlaps = 1\n")
    with pytest.raises(ConfigFileError, match="unknown key 'min_overlaps' in \\[drift\\]"):
        load_drift_config(path)
    assert load_drift_config(None) == DriftSection()


# ------------------------------------------------------------------------------ the command

TINY = TwoTowerConfig(dim=16, hidden=32, text=False, epochs=1, batch_size=1024,
                      val_fraction=0.0, device="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny models (ids and non-text features) trained with different seeds."""
    data = load_dataset(load_experiment_config(CONFIG).data)
    users = data.users[data.users["user_id"].astype(int) <= 100]
    ratings = data.ratings[data.ratings["user_id"].isin(set(users["user_id"]))]
    folder = tmp_path_factory.mktemp("drift-models")
    paths = []
    for seed in (1, 2):
        model = fit_two_tower(
            ratings, users, data.items, TINY.model_copy(update={"seed": seed}),
            towers=data.towers, progress=False,
        )  # fmt: skip
        paths.append(model.save(folder / f"seed{seed}.pt"))
    return paths[0], paths[1]


def _run(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["drift", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_drift_of_a_model_against_itself_passes(models, capsys) -> None:
    a, _ = models
    sample = ["--data", str(CONFIG), "--users", "60", "--items", "80"]
    code, out = _run(capsys, str(a), str(a), *sample)
    assert code == 0 and out["passed"] is True
    f = out["figures"]
    assert f["overlap_mean"] == 1 and f["rank_correlation_mean"] == 1
    assert f["neighbour_jaccard_mean"] == 1 and f["gini_increase"] == 0
    assert f["sampled_users"] == 60 and f["sampled_items"] == 80


def test_drift_over_a_threshold_exits_1_and_names_it(models, capsys, tmp_path) -> None:
    a, b = models
    config = tmp_path / "drift.toml"
    config.write_text(f'[drift]\ndata = "{CONFIG}"\nusers = 60\nitems = 100\nmin_overlap = 0.99\n')
    out_dir = tmp_path / "report"
    code = main(["drift", str(a), str(b), "--config", str(config), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "threshold min_overlap failed" in captured.err
    saved = json.loads((out_dir / "drift.json").read_text())
    assert saved["checks"][0]["passed"] is False
    assert saved["figures"]["overlap_mean"] < 0.99
    for name in ("drift.md", "overlap.png", "norms.png", "coverage_gini.png"):
        assert (out_dir / name).stat().st_size > 0
    assert "**FAIL**" in (out_dir / "drift.md").read_text()


def test_drift_needs_data_for_models(tmp_path, capsys) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["drift", str(a), str(b)]) == 2
    assert "--data CONFIG" in capsys.readouterr().err
    assert main(["drift", str(a), str(b), "--k", "0"]) == 2
    assert "greater than or equal to 1" in capsys.readouterr().err


def _store(folder: Path, ids: list[str], vectors: np.ndarray) -> str:
    uri = f"faiss:{folder}?index=Flat&metric=dot"
    with open_store(uri, dim=vectors.shape[1], metric="dot") as store:
        store.upsert(ids, vectors)
        store.flush()
    return uri


def test_drift_of_two_stores_compares_norms_and_neighbours(tmp_path, capsys) -> None:
    rng = np.random.default_rng(5)
    ids = [f"m{i}" for i in range(200)]
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    live = _store(tmp_path / "live", ids, vectors)
    same = _store(tmp_path / "same", ids, vectors)
    moved = _store(tmp_path / "moved", ids, 2 * vectors[rng.permutation(200)])
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(ids))
    code, out = _run(capsys, live, same, "--ids", str(id_file), "--items", "50")
    assert code == 0 and out["kind"] == "stores"
    assert out["figures"]["neighbour_jaccard_mean"] == 1 and out["figures"]["norm_shift"] == 0
    assert "overlap_mean" not in out["figures"]
    config = tmp_path / "drift.toml"
    config.write_text("[drift]\nmin_neighbour_jaccard = 0.5\nmin_overlap = 0.5\n")
    code, out = _run(capsys, live, moved, "--ids", str(id_file), "--config", str(config))
    assert code == 1 and out["failed"] == ["min_neighbour_jaccard"]
    assert out["figures"]["norm_shift"] == pytest.approx(1.0, rel=0.05)  # 2x the vectors
    assert out["checks"][0]["passed"] is None  # no users: overlap not measured
