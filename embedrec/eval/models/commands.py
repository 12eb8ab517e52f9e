"""Subcommands of this package, registered on the `embedrec` parser."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from embedrec.common.output import Output, add_output_flags


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
    add_output_flags(train)
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
    evaluate.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
        help="run the models (each on each split) and the cold-start report in N processes "
        "(default: the CPU count, at most 4: %(default)s); N=1 shows each model's own progress. "
        "The figures do not depend on N, only train_s does, except for a two-tower with "
        "threads = 0, which trains on its worker's share of the cores (float rounding)",
    )  # fmt: skip
    add_output_flags(evaluate)
    evaluate.set_defaults(func=_evaluate)

    _register_tune(sub)


def _register_tune(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser(
        "tune",
        help="choose hyperparameters on a validation split of the training data (Optuna)",
        description="Search the hyperparameters of CONFIG's models with Optuna (seeded TPE), "
        "for each split of [eval] splits on that split's own validation, carved from its "
        "training part by the same protocol (leave-last-out: each user's second-to-last "
        "interaction; temporal: the last tenth of the training time); the test part is never "
        "read. Writes a copy of CONFIG with a [tuned.splits.NAME] table per split holding the "
        "chosen values; `embedrec evaluate` on it runs each split with its own values and "
        "reports the test split once. Needs the extra 'recsys'.",
    )
    tune.add_argument("config", type=Path, metavar="CONFIG")
    tune.add_argument("--trials", type=int, metavar="N", help="trials per model")
    tune.add_argument(
        "--out", type=Path, metavar="PATH", help="config to write, or a folder to write it in "
        "(default: CONFIG's folder); the file is named CONFIG.tuned.toml unless PATH ends in .toml",
    )  # fmt: skip
    tune.add_argument(
        "--models", metavar="A,B", help="only these models (default: every model of [eval] "
        "models with a search space)",
    )  # fmt: skip
    tune.add_argument(
        "--splits", metavar="A,B", help="only these splits of [eval] splits (default: all)"
    )
    tune.add_argument("--timeout", type=float, metavar="S", help="stop a model's search after S s")
    tune.add_argument(
        "--merge", type=Path, action="append", default=[], metavar="TUNED",
        help="also take the models another `embedrec tune` run of CONFIG tuned (e.g. one run "
        "in parallel) from its output TUNED; with no --trials, only merge",
    )  # fmt: skip
    tune.set_defaults(func=_tune)


def _train(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading torch and pandas
    from embedrec.embedders.two_tower import fit_two_tower
    from embedrec.eval.models.config import load_experiment_config
    from embedrec.eval.models.data_summary import summarize
    from embedrec.eval.models.leaderboard import load_data

    output = Output.from_args(args, "train")
    config = load_experiment_config(args.config)
    output.say(f"train {args.config} -> {args.out or config.model_path}")
    data = load_data(config)
    summary = summarize(data, config)
    output.say("\n".join(summary.lines()))
    model = fit_two_tower(
        data.interactions, data.users, data.items, config.two_tower, towers=data.towers,
        progress=output.progress,
    )  # fmt: skip
    path = model.save(args.out or config.model_path)
    written = summary.write(path.parent)
    last = model.history[-1] if model.history else {}
    figures = {"model": path, "metadata": path.with_suffix(".json"), **last}
    figures["data"] = summary.to_json() | {"file": str(written)}
    output.summary(figures | {"history": model.history}, f"saved {path} and {figures['metadata']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading torch and pandas
    from embedrec.eval.models.config import check_time_splits, load_experiment_config
    from embedrec.eval.models.data_summary import summarize
    from embedrec.eval.models.leaderboard import evaluate, load_data, write

    output = Output.from_args(args, "evaluate")
    config = load_experiment_config(args.config)
    check_time_splits(config, config.eval.splits, str(args.config))
    output.say(f"evaluate {args.config} -> {args.out}")
    data = load_data(config)
    summary = summarize(data, config)
    output.say("\n".join(summary.lines()))
    summary.write(args.out)
    if args.mlflow is not None:
        # MLflow comes with the optional extra 'mlflow'
        from embedrec.eval.models.tracking import require_mlflow

        require_mlflow()
    board = evaluate(config, data=data, progress=output.progress, workers=args.workers)
    js, md = write(board, args.out)
    text = f"{md.read_text()}\nwrote {md} and {js}"
    figures = {"files": {js.name: str(js), md.name: str(md)}, "leaderboard": board}
    figures["data"] = summary.to_json()
    if args.mlflow is not None:
        # MLflow comes with the optional extra 'mlflow'
        from embedrec.eval.models.tracking import log_leaderboard

        figures["mlflow_run"] = log_leaderboard(board, args.mlflow, files=[js, md])
        text += f"\nlogged MLflow run {figures['mlflow_run']} to {args.mlflow}"
    output.summary(figures, text)
    return 0


def _tune(args: argparse.Namespace) -> int:
    # late: keeps `embedrec --help` from loading torch and pandas
    from embedrec.eval.models.config import check_time_splits, load_experiment_config
    from embedrec.eval.models.tune import combine, default_out, save, tune

    config = load_experiment_config(args.config)
    splits = _names(args.splits)
    check_time_splits(config, splits or config.eval.splits, str(args.config))
    if args.trials is None and not args.merge:
        raise ValueError("give --trials N (trials per model), or --merge TUNED to only merge")
    models = _names(args.models)
    tuned = config
    if args.trials is not None:
        tuned = tune(
            config, str(args.config), args.trials, models=models, splits=splits,
            timeout=args.timeout,
        )  # fmt: skip
    for path in args.merge:
        tuned = combine(tuned, load_experiment_config(path), str(path))
    out = default_out(args.config)
    if args.out is not None:
        out = args.out if args.out.suffix == ".toml" else args.out / out.name
    path = save(tuned, out)
    for split, record in tuned.tuned.splits.items():
        for model, score in record.best.items():
            print(f"{split}: {model}: validation {tuned.tuned.metric} {score:.4f}")
    print(f"wrote {path}; report the test split with: embedrec evaluate {path} --out DIR")
    return 0


def _names(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None
