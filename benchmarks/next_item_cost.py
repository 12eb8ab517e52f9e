"""What one fit of each next-item model costs: CPU seconds of `fit` on the training part
of the config's first split, the model built from the config (`[baselines.*]`) as the
leaderboard builds it, with `--epochs` and `--max-len` laid over the Cornac models.

    python benchmarks/next_item_cost.py [--config configs/next_item.toml]
        [--models cornac-sasrec,cornac-gru4rec] [--epochs 1] [--max-len 20 50]

Printed per row: the model, max_len, epochs, fit CPU s and wall s (the Cornac models train
on one torch thread, so CPU s is the figure to compare on a busy machine).
"""

from __future__ import annotations

import argparse
import time

from embedrec.eval.models.baselines import Catalog
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.leaderboard import MODELS, load_data, split_ratings
from embedrec.eval.models.tune import apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/next_item.toml")
    parser.add_argument("--models", default="cornac-sasrec,cornac-bert4rec,cornac-gru4rec,"
                        "cornac-fpmc,transitions,recent-popularity")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-len", type=int, nargs="+", default=[20, 50])
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


if __name__ == "__main__":
    main()
