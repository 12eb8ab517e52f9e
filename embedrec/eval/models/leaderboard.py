"""The evaluation harness: every model on the same splits, ranked exactly and through
stores, written to DIR/leaderboard.md and DIR/leaderboard.json.

Protocol (as in Microsoft Recommenders' benchmark): every test interaction is relevant, the
catalogue is the items with training interactions, each user's ranking is over all of it (no
sampled negatives) less the items they interacted with in training; metrics at k averaged
over the users with test interactions. Each split's models run with the values tuned on that
split's own validation, where the config has them.
The splits, k and the cold-start share (items held out from training entirely) come from
the config's `[eval]` section; published figures from its `[[published]]` tables.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedrec.common.progress import Progress
from embedrec.data.dataset import Dataset, load_dataset
from embedrec.embedders.two_tower import default_text_fn
from embedrec.eval.models.baselines import (
    Catalog,
    ContentKNN,
    GroupPopularity,
    Model,
    MostPopular,
    TwoTower,
    store_factory,
)
from embedrec.eval.models.config import ExperimentConfig
from embedrec.eval.models.field_models import EASE, CornacBiVAE, CornacBPR, ImplicitALS
from embedrec.eval.models.next_item_params import CORNAC_SEQ_PARAMS
from embedrec.eval.models.params import RECOMMENDERS_PARAMS
from embedrec.eval.models.search_space import SPACES, current_params
from embedrec.eval.models.sequential.registry import CORNAC as CORNAC_NEXT_ITEM
from embedrec.eval.models.sequential.registry import SESSION as SESSION_BASELINES
from embedrec.eval.models.workers import run_all
from embedrec.ranking.metrics import hit_matrix, ranking_metrics, recall_at_k, top_k
from embedrec.ranking.splits import cold_item_split, describe_split, make_split
from embedrec.stores import missing_backend

log = logging.getLogger(__name__)

TextFn = Callable[[list[str]], np.ndarray]


def _truth(catalog: Catalog, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users evaluated, their relevant counts, relevant pairs as (row, item index)) where a
    test rating of an item outside the catalogue still counts as relevant, as in
    Recommenders."""
    test = test[test["user_id"].isin(catalog.user_index.index)]
    users = np.unique(catalog.user_index.loc[test["user_id"]].to_numpy())
    row_of = pd.Series(np.arange(len(users)), index=catalog.users["user_id"].to_numpy()[users])
    rows = row_of.loc[test["user_id"]].to_numpy()
    n_rel = np.bincount(rows, minlength=len(users))
    in_cat = test["item_id"].isin(catalog.item_index.index).to_numpy()
    pairs = np.stack([rows[in_cat], catalog.item_index.loc[test["item_id"][in_cat]].to_numpy()])
    return users, n_rel, pairs


def score_model(
    model: Model,
    catalog: Catalog,
    test: pd.DataFrame,
    k: int,
    store_uri: str | None = None,
    remove_seen: bool = True,
) -> dict[str, float]:
    """Metrics of a fitted model on `test`, ranking exactly or through the store at
    `store_uri`."""
    users, n_rel, pairs = _truth(catalog, test)
    seen = catalog.interactions(catalog.items)[users] > 0 if remove_seen else None
    started = time.perf_counter()
    if store_uri is None:
        scores = model.scores(users)
    else:
        depth = k + (seen.sum(axis=1) if seen is not None else 0)
        factory, tmp = store_factory(store_uri)
        with tmp:
            scores = model.store_scores(users, factory, np.broadcast_to(depth, len(users)))
    best = top_k(scores, seen, k)
    hits = hit_matrix(best, pairs[0], pairs[1], len(catalog.items))
    metrics = ranking_metrics(best, hits, n_rel, k, len(catalog.items))
    metrics["users"] = len(users)
    metrics["rank_s"] = time.perf_counter() - started
    return metrics


def _available(uri: str) -> bool:
    if (reason := missing_backend(uri.partition(":")[0])) is not None:
        log.warning("skipping %s: %s", uri, reason)
    return reason is None


ModelFactory = Callable[[ExperimentConfig, TextFn, bool], Model]

MODELS: dict[str, ModelFactory] = {
    **CORNAC_NEXT_ITEM,
    "cornac-bivae": lambda config, text_fn, progress: CornacBiVAE(config.baselines.bivae),
    "bpr": lambda config, text_fn, progress: TwoTower(
        "BPR-MF (ids only)", config.bpr, progress=progress
    ),
    "two-tower": lambda config, text_fn, progress: TwoTower(
        "two-tower sequence" if config.two_tower.sequence else "two-tower hybrid",
        config.two_tower,
        text_fn,
        progress,
    ),
    "als": lambda config, text_fn, progress: ImplicitALS(config.baselines.als),
    "cornac-bpr": lambda config, text_fn, progress: CornacBPR(config.baselines.cornac_bpr),
    "ease": lambda config, text_fn, progress: EASE(config.baselines.ease),
    "content-knn": lambda config, text_fn, progress: ContentKNN(
        text_fn, config.eval.knn_neighbours
    ),
    **SESSION_BASELINES,
    "most-popular": lambda config, text_fn, progress: MostPopular(),
}
"""The models `[eval] models` can name, in the order the leaderboard runs them: the slowest
first (at the settings of configs/two_tower.toml), so that worker processes finish close
together."""


def split_ratings(name: str, ratings: pd.DataFrame, config: ExperimentConfig):
    """(train, test) of the split `name` with the config's ratio and seed."""
    return make_split(name, ratings, ratio=config.eval.ratio, seed=config.eval.seed)


def _split_name(name: str, config: ExperimentConfig) -> str:
    return describe_split(name, ratio=config.eval.ratio, seed=config.eval.seed)


def _split_heading(name: str, eval_section: dict[str, Any]) -> str:
    return describe_split(name, ratio=eval_section["ratio"], seed=eval_section["seed"])


def load_data(config: ExperimentConfig) -> Dataset:
    """The dataset the config's `[data]` section describes, read and checked."""
    return load_dataset(config.data)


def _published_rows(config: ExperimentConfig) -> list[dict[str, Any]]:
    """The config's `[[published]]` figures for the splits and k of this run, marked as
    published (their numbers, not rerun here)."""
    return [
        {
            "model": f"{model} ({group.by})",
            "scoring": "published",
            "split": _split_name(group.split, config),
            **figures,
            "source": group.source,
        }
        for group in config.published
        if group.split in config.eval.splits and group.k == config.eval.k
        for model, figures in group.models.items()
    ]


@dataclass(frozen=True)
class Task:
    """One independent unit of an evaluation: a model fitted on a split and scored, or
    (`split` None) the cold-start report."""

    split: str | None
    model: str | None = None

    @property
    def label(self) -> str:
        return f"{self.split}: {self.model}" if self.split else "cold start"


def tasks(config: ExperimentConfig) -> list[Task]:
    """The cold-start report (a two-tower fit and two cheap models), then each model on every
    split, in the order of MODELS."""
    keys = [key for key in MODELS if key in config.eval.models]
    cold = [Task(None)] if config.eval.cold_fraction else []
    return cold + [Task(split, key) for key in keys for split in config.eval.splits]


@dataclass
class Outcome:
    task: Task
    rows: list[dict[str, Any]]
    """Leaderboard rows, or the cold-start rows for the cold-start task."""
    fit_s: float


class Runner:
    """Runs tasks with what they share: the config, the data, the text model (loaded on
    first use, once per process) and the stores to score through; each split is cut once.
    `threads`: torch threads for each task (a worker's share of the cores); None leaves
    them as they are."""

    def __init__(
        self,
        config: ExperimentConfig,
        data: Dataset,
        text_fn: TextFn | None,
        stores: list[str],
        progress: bool,
        threads: int | None = None,
    ) -> None:
        self.config, self.data, self.stores, self.progress = config, data, stores, progress
        self.threads = threads
        self._text_fn = text_fn
        self._splits: dict[str, tuple[Catalog, pd.DataFrame]] = {}

    def text_fn(self, texts: list[str]) -> np.ndarray:
        if self._text_fn is None:
            self._text_fn = default_text_fn()
        return self._text_fn(texts)

    def split(self, name: str) -> tuple[Catalog, pd.DataFrame]:
        if name not in self._splits:
            train, test = split_ratings(name, self.data.ratings, self.config)
            towers = self.config.data.towers()
            catalog = Catalog.trained_on(self.data.users, self.data.items, train, towers)
            self._splits[name] = catalog, test
        return self._splits[name]

    def run(self, task: Task) -> Outcome:
        if self.threads:
            torch.set_num_threads(self.threads)
        started = time.perf_counter()
        if task.split is None:
            cold = cold_start(self.config, self.data, self.text_fn, self.progress)
            return Outcome(task, cold, time.perf_counter() - started)
        catalog, test = self.split(task.split)
        config = self.config.for_split(task.split)
        model = MODELS[task.model](config, self.text_fn, self.progress)
        model.fit(catalog)
        fit_s = time.perf_counter() - started
        rows = [
            {
                "model": model.name,
                "scoring": uri or "exact",
                "split": _split_name(task.split, self.config),
                **{
                    key: round(v, 6)
                    for key, v in score_model(model, catalog, test, self.config.eval.k, uri).items()
                },
                "train_s": round(fit_s, 1),
                "source": "embedrec",
                **_values(task, self.config, config),
            }
            for uri in [None] + (self.stores if model.store_based else [])
        ]
        return Outcome(task, rows, fit_s)


def _values(task: Task, config: ExperimentConfig, used: ExperimentConfig) -> dict[str, Any]:
    """Which values a row's model ran with: its searched parameters, and whether they were
    chosen on this split's own validation or are the config's."""
    if task.model not in SPACES:
        return {}
    record = config.tuned.splits.get(task.split) if config.tuned else None
    tuned = record is not None and task.model in record.best
    return {
        "values": current_params(task.model, used.model_dump()),
        "values_from": "tuned on this split's validation" if tuned else "the config",
    }


def evaluate(
    config: ExperimentConfig,
    *,
    data: Dataset | None = None,
    text_fn: TextFn | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Run every model on every split and the cold-start report, in `workers` processes
    (a `text_fn` must then pickle; None loads the default one in each); return the
    leaderboard as a JSON-able dict. Only `train_s` depends on `workers`, and the figures of
    models with `threads = 0`, which get each worker's share of the cores."""
    if data is None:
        data = load_data(config)
    stores = [uri for uri in config.eval.stores if _available(uri)]
    todo = tasks(config)
    # per-epoch bars only in this process: workers' bars would interleave; each worker gets
    # its share of the cores (for models with `threads = 0`)
    share = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    runner = Runner(config, data, text_fn, stores, progress and workers == 1, share)
    with Progress(len(todo), "evaluate", "tasks", enabled=progress, every_s=0.0) as bar:

        def done(outcome: Outcome) -> None:
            log.info("%s: fitted in %.1f s", outcome.task.label, outcome.fit_s)
            bar.update(1, done=f"{outcome.task.label} in {outcome.fit_s:.1f} s")

        outcomes = run_all(runner, todo, workers, done)
    rows = [row for o in outcomes if o.task.split is not None for row in o.rows]
    cold = [row for o in outcomes if o.task.split is None for row in o.rows]
    return {
        "dataset": config.data.name,
        "k": config.eval.k,
        "protocol": __doc__.split("\n\n")[1].replace("\n", " ").strip(),
        "rows": rows + _published_rows(config),
        "cold_start": cold,
        "tuned": config.tuned.model_dump() if config.tuned else None,
        "config": json.loads(config.model_dump_json()),
    }


def cold_start(
    config: ExperimentConfig, data: Any, text_fn: TextFn, progress: bool = True
) -> list[dict[str, Any]]:
    """Hold out a share of items from training entirely; rank only those items for every
    user who rated one, and report recall@k of the feature-only two-tower item vectors
    against group popularity and content item-kNN."""
    k = config.eval.k
    train, test = cold_item_split(data.ratings, config.eval.cold_fraction, seed=config.eval.seed)
    cold_items = data.items[data.items["item_id"].isin(set(test["item_id"]))]
    catalog = Catalog(data.users, cold_items, train, data.items, config.data.towers())
    models: list[Model] = [
        GroupPopularity(),
        ContentKNN(text_fn, config.eval.knn_neighbours),
        TwoTower("two-tower hybrid (features only)", config.two_tower, text_fn, progress),
    ]
    users, n_rel, pairs = _truth(catalog, test)
    out = []
    for model in models:
        model.fit(catalog)
        best = top_k(model.scores(users), None, k)
        hits = hit_matrix(best, pairs[0], pairs[1], len(catalog.items))
        out.append(
            {
                "model": model.name,
                f"recall@{k}": round(recall_at_k(hits, n_rel, k), 6),
                "cold_items": len(cold_items),
                "users": len(users),
            }
        )
    return out


METRIC_COLUMNS = ("ndcg@{k}", "map", "map@{k}", "precision@{k}", "recall@{k}", "hit_rate@{k}",
                  "coverage", "train_s")  # fmt: skip


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) and value < 100 else str(value)


def _tuning_note(tuned: dict[str, Any] | None, eval_section: dict[str, Any]) -> list[str]:
    """What was tuned for each split of `eval_section` (the config's `[eval]`), one
    paragraph each."""
    if not tuned:
        return ["Hyperparameters: as written in the config, not tuned on validation.", ""]
    lines = []
    for name in eval_section["splits"]:
        heading = _split_heading(name, eval_section)
        record = tuned["splits"].get(name)
        if record is None:
            lines += [
                f"Hyperparameters on {heading}: the config's, not tuned on its validation.",
                "",
            ]
            continue
        best = ", ".join(f"{m} {v:.4f}" for m, v in record["best"].items())
        counts = record["trials_by_model"] or dict.fromkeys(record["best"], tuned["trials"])
        if len(set(counts.values())) == 1:
            n = next(iter(counts.values()))
            how = f"`embedrec tune {tuned['config']} --trials {n}` ({n} trials per model"
        else:
            per = ", ".join(f"{m} {n}" for m, n in counts.items())
            how = f"`embedrec tune` from {tuned['config']} (trials: {per}"
        lines += [
            f"Hyperparameters on {heading}: tuned by {how}, {tuned['sampler']}) on "
            f"{record['on']}; best validation {tuned['metric']}: {best}. The test split is "
            "reported once, here.",
            "",
        ]
    return lines


def _values_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each model's searched values on a split, once per model."""
    seen: dict[str, str] = {}
    for r in rows:
        if "values" in r and r["model"] not in seen:
            values = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in r["values"].items()
            )
            seen[r["model"]] = f"- {r['model']} ({r['values_from']}): {values}"
    return ["Values used:", "", *seen.values(), ""] if seen else []


def to_markdown(board: dict[str, Any]) -> str:
    k = board["k"]
    cols = [c.format(k=k) for c in METRIC_COLUMNS]
    lines = [f"# Leaderboard: {board['dataset']}, k={k}", "", board["protocol"], ""]
    lines += _tuning_note(board.get("tuned"), board["config"]["eval"])
    for split in dict.fromkeys(r["split"] for r in board["rows"]):
        users = max((r["users"] for r in board["rows"] if r["split"] == split and "users" in r),
                    default=None)  # fmt: skip
        count = f" ({users} test users)" if users is not None else ""
        lines += [f"## {split}{count}", "", "| model | scoring | " + " | ".join(cols) + " |"]
        lines.append("|" + " --- |" * (len(cols) + 2))
        rows = [r for r in board["rows"] if r["split"] == split]
        for r in sorted(rows, key=lambda r: -r.get(f"ndcg@{k}", 0)):
            name = r["model"] + ("" if r["source"] == "embedrec" else " ¹")
            cells = [_fmt(r.get(c)) if c != "train_s" else str(r.get(c, "–")) for c in cols]
            lines.append(f"| {name} | {r['scoring']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _values_lines(rows)
    for source in dict.fromkeys(r["source"] for r in board["rows"] if r["source"] != "embedrec"):
        lines += [f"¹ Published: their numbers, not rerun here: {source}.", ""]
    if any("(Cornac, " in r["model"] for r in board["rows"]):
        lines += [
            f"Cornac rows: rerun here with Recommenders' settings: {RECOMMENDERS_PARAMS}.",
            "",
        ]
    if any(r["model"].endswith(" (Cornac)") for r in board["rows"]):
        lines += [f"Cornac's next-item rows: settings from {CORNAC_SEQ_PARAMS}.", ""]
    if board["cold_start"]:
        first = board["cold_start"][0]
        lines += [
            f"## Cold start: {first['cold_items']} items held out of training "
            f"({first['users']} users rated them); ranking among those items only",
            "",
            f"| model | recall@{k} |",
            "| --- | --- |",
        ]
        lines += [f"| {r['model']} | {r[f'recall@{k}']:.4f} |" for r in board["cold_start"]]
        lines.append("")
    return "\n".join(lines)


def write(board: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "leaderboard.json", out / "leaderboard.md"
    js.write_text(json.dumps(board, indent=1) + "\n")
    md.write_text(to_markdown(board))
    return js, md
