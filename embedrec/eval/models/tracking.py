"""Optional MLflow tracking of a leaderboard into a local file store (`--mlflow DIR`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

EXPERIMENT = "embedrec-evaluate"


def require_mlflow() -> Any:
    try:
        # MLflow comes with the optional extra 'mlflow'
        import mlflow
    except ImportError:
        raise ValueError("--mlflow needs MLflow: pip install mlflow-skinny") from None
    return mlflow


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


def _key(*parts: str) -> str:
    """An MLflow metric name: letters, digits and _ - . / only."""
    return "/".join(re.sub(r"[^\w\-. /]", "_", p).replace(" ", "_") for p in parts)


def log_leaderboard(board: dict[str, Any], directory: str | Path, files: list[Path]) -> str:
    """Log the config as params, every leaderboard number as a metric named
    split/model/scoring/metric, and the leaderboard files as artifacts. Returns the run id."""
    mlflow = require_mlflow()
    # MLflow 3 keeps the file store in maintenance mode and refuses it unless opted in
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(directory.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    params: dict[str, Any] = {}
    _flatten("", board["config"], params)
    with mlflow.start_run() as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        metrics: dict[str, float] = {}
        for row in board["rows"]:
            if row["source"] != "embedrec":
                continue
            for name, value in row.items():
                if isinstance(value, float | int) and not isinstance(value, bool):
                    metrics[_key(row["split"], row["model"], row["scoring"], name)] = value
        for row in board["cold_start"]:
            for name, value in row.items():
                if isinstance(value, float):
                    metrics[_key("cold start", row["model"], name)] = value
        mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path))
        return run.info.run_id
