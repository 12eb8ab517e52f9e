"""Why the in-house BPR and Cornac's differ: both on the same validation split, each from its
own start and from the other's.

    python benchmarks/bpr_parity.py [--config configs/two_tower.toml] [--init-std 0.01 0.0015]

The split is the one `embedrec tune` uses: the config's first split applied to the training
part of that split (the test part is dropped unread). Rows: Cornac's BPR as Recommenders runs
it (`[baselines.cornac_bpr]`, its U(-0.5, 0.5)/k start); Cornac's BPR started from N(0, s)
instead, for each s of `--init-std`; the in-house BPR (`[bpr]` of the config) with
`init_std` = s, for each s. The defaults: BPR's usual N(0, 0.01), and the 0.0015 of
configs/two_tower.toml, close to Cornac's standard deviation of 0.29/k at k = 200. Printed
per row: validation NDCG@10 and the fit's CPU seconds. Needs the extra 'recsys' (Cornac).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import cornac
import numpy as np

from embedrec.eval.models.baselines import Catalog, Model
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.field_models import CornacBPR
from embedrec.eval.models.leaderboard import MODELS, load_data, score_model, split_ratings
from embedrec.eval.models.tune import apply


def cornac_from(std: float) -> SimpleNamespace:
    """Cornac with its BPR starting from N(0, std) factors instead of U(-0.5, 0.5)/k."""

    class NormalStart(cornac.models.BPR):
        def _init(self) -> None:
            rng = np.random.default_rng(self.seed)
            self.u_factors = rng.normal(0, std, (self.total_users, self.k)).astype(np.float32)
            self.i_factors = rng.normal(0, std, (self.total_items, self.k)).astype(np.float32)
            super()._init()  # keeps the factors it is given; adds the zero item biases

    return SimpleNamespace(data=cornac.data, models=SimpleNamespace(BPR=NormalStart))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/two_tower.toml"))
    parser.add_argument("--init-std", type=float, nargs="+", default=[0.01, 0.0015])
    args = parser.parse_args()
    config = load_experiment_config(args.config)
    data = load_data(config)
    name = config.eval.splits[0]
    train, _ = split_ratings(name, data.ratings, config)
    fit, validation = split_ratings(name, train, config)
    catalog = Catalog.trained_on(data.users, data.items, fit, config.data.towers())

    rows: list[tuple[str, Model]] = [
        ("Cornac, its own start", CornacBPR(config.baselines.cornac_bpr))
    ]
    for std in args.init_std:
        model = CornacBPR(config.baselines.cornac_bpr)
        model.lib = cornac_from(std)
        rows.append((f"Cornac, N(0, {std:g}) start", model))
    for std in args.init_std:
        bpr = apply(config, {"bpr": {"init_std": std}})
        rows.append(
            (f"in-house, N(0, {std:g}) start", MODELS["bpr"](bpr, lambda texts: None, False))
        )

    print(f"validation: {len(fit):,} interactions to fit, {len(validation):,} to score")
    for label, model in rows:
        started = time.process_time()
        model.fit(catalog)
        cpu = time.process_time() - started
        ndcg = score_model(model, catalog, validation, 10)["ndcg@10"]
        print(f"{label:<50} ndcg@10 {ndcg:.4f}  {cpu:6.1f} CPU s", flush=True)


if __name__ == "__main__":
    main()
