"""Subcommands of this package, registered on the `embedrec` parser."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to `sub`."""
    train = sub.add_parser(
        "train",
        help="train the two-tower model of a config on all of its ratings",
        description="Train the two-tower user/item model described by CONFIG (TOML) on every "
        "rating of its dataset and save it to the config's model_path (state dict + JSON).",
    )
    train.add_argument("config", type=Path, metavar="CONFIG")
    train.add_argument("--out", type=Path, help="model file to write (default: model_path)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="score the baselines and the two-tower model; write a leaderboard",
        description="Run the ranking benchmark of CONFIG and write DIR/leaderboard.md and "
        "DIR/leaderboard.json.",
    )
    evaluate.add_argument("config", type=Path, metavar="CONFIG")
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR")
    evaluate.add_argument(
        "--mlflow", type=Path, metavar="DIR", help="also log params, metrics and the "
        "leaderboard to an MLflow file store in DIR (needs mlflow installed)",
    )  # fmt: skip
    evaluate.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from embedrec.embedders.two_tower import TwoTowerModel
    from embedrec.eval.config import load_config
    from embedrec.eval.leaderboard import load_data

    config = load_config(args.config)
    data = load_data(config)
    model = TwoTowerModel.fit(data.ratings, data.users, data.items, config.two_tower)
    path = model.save(args.out or config.model_path)
    print(f"saved {path} and {path.with_suffix('.json')}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from embedrec.eval.config import load_config
    from embedrec.eval.leaderboard import evaluate, write

    config = load_config(args.config)
    if args.mlflow is not None:
        from embedrec.eval.tracking import require_mlflow

        require_mlflow()
    board = evaluate(config)
    js, md = write(board, args.out)
    print(md.read_text())
    print(f"wrote {md} and {js}")
    if args.mlflow is not None:
        from embedrec.eval.tracking import log_leaderboard

        run_id = log_leaderboard(board, args.mlflow, files=[js, md])
        print(f"logged MLflow run {run_id} to {args.mlflow}")
    return 0
