"""The `embedrec` command. Each package registers its own subcommands (see COMMANDS); their
modules import only argparse at the top, so that `embedrec --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from embedrec.stores.errors import StoreError

COMMANDS = (
    "embedrec.ingestion.commands",
    "embedrec.ingestion.generation_commands",
    "embedrec.eval.models.commands",
    "embedrec.eval.bench.commands",
    "embedrec.eval.drift.commands",
    "embedrec.stores.recall.commands",
    "embedrec.retrieval.commands",
    "embedrec.ui.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedrec",
        description="Embedding-based recommendation and retrieval over FAISS, Qdrant and Pinecone.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)  # --quiet: errors only, log warnings included
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR if quiet else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (StoreError, ValueError, OSError) as exc:
        print(f"embedrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embedrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
