"""What one fit of each next-item model costs: CPU seconds of `fit` on the training part
of the config's first split, the model built from the config (`[baselines.*]`) as the
leaderboard builds it, with `--epochs` and `--max-len` laid over the Cornac models; and of
scoring every user once (`--rounds`, medians). For GRU4Rec the scoring is timed both ways,
interleaved: the harness's batched scores and Cornac's own `score` one user at a time.

    python benchmarks/next_item_cost.py [--config configs/next_item.toml]
        [--models cornac-sasrec,cornac-gru4rec] [--epochs 1] [--max-len 20 50] [--rounds 3]

Printed per row: the model, max_len, epochs, fit CPU s and wall s (the Cornac models train
on one torch thread, so CPU s is the figure to compare on a busy machine), then the scoring.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from embedrec.eval.models.baselines import Catalog
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.leaderboard import MODELS, load_data, split_ratings
from embedrec.eval.models.sequential.cornac_models import one_by_one
from embedrec.eval.models.sequential.gru4rec_scores import gru4rec_scores
from embedrec.eval.models.tune import apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/next_item.toml")
    parser.add_argument("--models", default="cornac-sasrec,cornac-bert4rec,cornac-gru4rec,"
                        "cornac-fpmc,transitions,recent-popularity")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-len", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_experiment_config(args.config)
    data = load_data(config)
    split = config.eval.splits[0]
    train, _ = split_ratings(split, data.ratings, config)  # the test part is not used
    catalog = Catalog.trained_on(data.users, data.items, train, config.data.towers())
    print(f"{config.data.name}, {split}: {len(train)} training interactions")
    for key in args.models.split(","):
        table = key.removeprefix("cornac-")
        lengths = args.max_len if table in ("sasrec", "bert4rec") else [None]
        for max_len in lengths:
            patch = {}
            if key.startswith("cornac-") and table != "spop":
                patch = {"n_epochs": args.epochs} | ({"max_len": max_len} if max_len else {})
            model = MODELS[key](apply(config, {"baselines": {table: patch}}), None, False)
            cpu, wall = time.process_time(), time.perf_counter()
            model.fit(catalog)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            epochs = args.epochs if patch else "-"
            print(f"{key:20} max_len {max_len or '-':>3} epochs {epochs}: "
                  f"fit {cpu:7.1f} CPU s, {wall:7.1f} s wall")  # fmt: skip
            score_cost(key, model, len(catalog.users), args.rounds)


def cpu_s(fn) -> tuple[float, np.ndarray]:
    cpu = time.process_time()
    out = fn()
    return time.process_time() - cpu, out


def score_cost(key: str, model, users: int, rounds: int) -> None:
    """Median CPU s to score every user; GRU4Rec's batched scores against Cornac's own."""
    ways = {"scores": lambda: model.scores(np.arange(users))}
    if key == "cornac-gru4rec":
        known = list(model.history)
        histories = [model.history[u] for u in known]
        ways = {
            "batched": lambda: gru4rec_scores(model.model, histories),
            "Cornac one by one": lambda: one_by_one(model.model, known, histories),
        }
    times: dict[str, list[float]] = {way: [] for way in ways}
    outs = {}
    for _ in range(rounds):  # interleaved, so a change of load hits both ways alike
        for way, fn in ways.items():
            spent, outs[way] = cpu_s(fn)
            times[way].append(spent)
    for way, spent in times.items():
        print(f"{'':20} score {users} users, {way}: {statistics.median(spent):7.2f} CPU s")
    if len(outs) == 2:
        a, b = outs.values()
        print(f"{'':20} largest difference between the two: {np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()
