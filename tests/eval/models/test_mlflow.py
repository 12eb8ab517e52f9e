import importlib.util

import pytest

from embedrec.eval.models.leaderboard import write
from embedrec.eval.models.tracking import log_leaderboard

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="mlflow is an optional extra and is not installed (pip install mlflow-skinny)",
)

BOARD = {
    "dataset": "movielens-100k",
    "k": 10,
    "protocol": "test",
    "config": {"two_tower": {"dim": 16, "lr": 0.001}, "eval": {"k": 10}},
    "rows": [
        {
            "model": "two-tower hybrid",
            "scoring": "faiss:?index=HNSW32",
            "split": "strat",
            "ndcg@10": 0.41,
            "map": 0.12,
            "source": "embedrec",
        },
        {
            "model": "BPR (Microsoft Recommenders)",
            "scoring": "exact",
            "split": "strat",
            "ndcg@10": 0.441997,
            "source": "their README",
        },
    ],
    "cold_start": [
        {"model": "content item-kNN (text)", "recall@10": 0.05, "cold_items": 3, "users": 2}
    ],
}


def test_logs_params_metrics_and_files(tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    files = list(write(BOARD, tmp_path / "out"))
    run_id = log_leaderboard(BOARD, tmp_path / "mlruns", files)
    mlflow.set_tracking_uri((tmp_path / "mlruns").resolve().as_uri())
    run = mlflow.get_run(run_id)
    assert run.data.params["two_tower.dim"] == "16"
    assert run.data.metrics["strat/two-tower_hybrid/faiss__index_HNSW32/ndcg_10"] == 0.41
    assert run.data.metrics["cold_start/content_item-kNN__text_/recall_10"] == 0.05
    assert not any("Microsoft" in name for name in run.data.metrics)  # theirs, not ours
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert artifacts == {"leaderboard.json", "leaderboard.md"}
