"""The `[two_tower]` model of a config on a time protocol's validation, or its test once.

    python benchmarks/sequence_protocols.py configs/sequence.toml leave-last-out
    python benchmarks/sequence_protocols.py configs/sequence.toml temporal --test
    python benchmarks/sequence_protocols.py CONFIG PROTOCOL --set '{"epochs": 20}'

Validation is carved from the protocol's training part the way the protocol cuts its test:
leave-last-out again (each user's second-to-last item) or the last tenth of training time;
`--test` trains on the whole training part and scores the test part (read it once, at the
end). Most-popular and recent popularity (the config's `[baselines.recent_popularity]`, or
`--recent-days`) are scored beside it, over every user and apart for the users with no
training history ("new") and those with one ("known"). Prints one JSON line per model:
NDCG@10, recall@10, the users scored, and the fit's wall and CPU seconds (the machine may be
shared: CPU time says more than wall time).
"""

from __future__ import annotations

import argparse
import json
import time

from embedrec.embedders.two_tower import default_text_fn
from embedrec.eval.models.baselines import Catalog, MostPopular, TwoTower
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
    models = (
        MostPopular(),
        RecentPopularity(recent),
        TwoTower("two-tower", two_tower, default_text_fn()),
    )
    for model in models:
        cpu, wall = time.process_time(), time.perf_counter()
        model.fit(catalog)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        m = score_model(model, catalog, test, config.eval.k)
        part = "test" if args.test else "validation"
        print(json.dumps({
            "model": model.name, "protocol": args.protocol, "part": part,
            "ndcg@10": round(m["ndcg@10"], 4), "recall@10": round(m["recall@10"], 4),
            "users": m["users"], "fit_wall_s": round(wall, 1), "fit_cpu_s": round(cpu, 1),
            **{f"ndcg@10 {g} ({rows['user_id'].nunique()} users)": round(
                score_model(model, catalog, rows, config.eval.k)["ndcg@10"], 4)
               for g, rows in groups.items() if len(rows)},
        }))  # fmt: skip


if __name__ == "__main__":
    main()
