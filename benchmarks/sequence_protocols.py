"""The `[two_tower]` model of a config on a time protocol's validation, or its test once.

    python benchmarks/sequence_protocols.py configs/sequence.toml leave-last-out
    python benchmarks/sequence_protocols.py configs/sequence.toml temporal --test
    python benchmarks/sequence_protocols.py CONFIG PROTOCOL --set '{"epochs": 20}'
    python benchmarks/sequence_protocols.py CONFIG temporal --seeds 1,2,3,4,5,6

Validation is carved from the protocol's training part the way the protocol cuts its test:
leave-last-out again (each user's second-to-last item) or the last tenth of training time;
`--test` trains on the whole training part and scores the test part (read it once, at the
end). Most-popular and recent popularity (the config's `[baselines.recent_popularity]`, or
`--recent-days`) are scored beside it, over every user and apart for the users with no
training history ("new") and those with one ("known"). Prints one JSON line per model:
NDCG@10, recall@10, the users scored, and the fit's wall and CPU seconds (the machine may be
shared: CPU time says more than wall time). With `--seeds`, one two-tower per seed, then
every subset of K of them side by side as `[two_tower] ensemble = K` serves them (the mean
of their scores): the mean, min and max NDCG@10 over the subsets of each K, so a setting is
judged by more than one seed's draw.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import pandas as pd

from embedrec.embedders.two_tower import default_text_fn
from embedrec.embedders.two_tower.model import side_by_side
from embedrec.eval.models.baselines import Catalog, DotModel, Model, MostPopular, TwoTower
from embedrec.eval.models.config import load_experiment_config
from embedrec.eval.models.leaderboard import load_data, score_model, split_ratings
from embedrec.eval.models.sequential.session import RecentPopularity
from embedrec.ranking.splits import leave_last_out, temporal_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("protocol", choices=["leave-last-out", "temporal"])
    parser.add_argument("--test", action="store_true", help="score the test part (once)")
    parser.add_argument("--set", default="{}", help="[two_tower] values over the config's (JSON)")
    parser.add_argument("--recent-days", type=float, help="recent popularity's window (days)")
    parser.add_argument("--seeds", help="two-towers of these seeds, and their ensembles (1,2,3)")
    args = parser.parse_args()
    config = load_experiment_config(args.config)
    two_tower = type(config.two_tower).model_validate(
        config.two_tower.model_dump() | json.loads(args.set)
    )
    data = load_data(config)
    train, test = split_ratings(args.protocol, data.interactions, config)
    if not args.test:
        loo = args.protocol == "leave-last-out"
        train, test = leave_last_out(train) if loo else temporal_split(train, 0.9)
    catalog = Catalog.trained_on(data.users, data.items, train, data.towers)
    recent = config.baselines.recent_popularity
    if args.recent_days is not None:
        recent = recent.model_copy(update={"days": args.recent_days})
    known = test["user_id"].isin(set(train["user_id"]))
    groups = {"new": test[~known], "known": test[known]}
    seeds = [two_tower.seed] if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    models: list[Model] = [MostPopular(), RecentPopularity(recent)]
    models += [
        TwoTower(name, two_tower.model_copy(update={"seed": s}), default_text_fn())
        for s in seeds
        for name in ["two-tower" if args.seeds is None else f"two-tower seed {s}"]
    ]
    part = "test" if args.test else "validation"
    for model in models:
        cpu, wall = time.process_time(), time.perf_counter()
        model.fit(catalog)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        m = score_model(model, catalog, test, config.eval.k)
        print(json.dumps({
            "model": model.name, "protocol": args.protocol, "part": part,
            "ndcg@10": round(m["ndcg@10"], 4), "recall@10": round(m["recall@10"], 4),
            "users": m["users"], "fit_wall_s": round(wall, 1), "fit_cpu_s": round(cpu, 1),
            **{f"ndcg@10 {g} ({rows['user_id'].nunique()} users)": round(
                score_model(model, catalog, rows, config.eval.k)["ndcg@10"], 4)
               for g, rows in groups.items() if len(rows)},
        }), flush=True)  # fmt: skip
    if len(seeds) > 1:
        _ensembles(models[2:], catalog, test, groups, config.eval.k)


class _SideBySide(DotModel):
    """Trained two-towers served as `ensemble` serves its members (`side_by_side`, the
    function `TwoTowerModel` serves them with)."""

    name = "ensemble"

    def __init__(self, members: tuple[TwoTower, ...], catalog: Catalog) -> None:
        self.user_vecs = side_by_side([m.user_vecs for m in members], user=True)
        self.item_vecs = side_by_side([m.item_vecs for m in members], user=False)
        self._set_items(catalog)

    def fit(self, catalog: Catalog) -> None:
        raise NotImplementedError("built from trained members")


def _ensembles(
    members: list[Model], catalog: Catalog, test: pd.DataFrame, groups: dict, k: int
) -> None:
    """For each size K: NDCG@10 over every subset of K `members` side by side."""
    for size in range(1, len(members) + 1):
        got: dict[str, list[float]] = {"all": [], **{g: [] for g in groups}}
        for combo in itertools.combinations(members, size):
            model = _SideBySide(combo, catalog)  # type: ignore[arg-type]
            for g, rows in {"all": test, **groups}.items():
                got[g].append(score_model(model, catalog, rows, k)["ndcg@10"])
        print(json.dumps({
            "ensemble": size, "subsets": len(got["all"]),
            "ndcg@10 mean": round(float(np.mean(got["all"])), 4),
            "min": round(min(got["all"]), 4), "max": round(max(got["all"]), 4),
            **{f"{g} mean": round(float(np.mean(got[g])), 4) for g in groups},
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
