"""What a long-running command prints, and where: the shared `--quiet` and `--json` flags.

A command says what it is about to do before it starts (a header), shows progress while it
works and ends with a summary. People read the header, the progress and the summary; a
script reads the `--json` summary, so with `--json` stdout carries that one JSON document and
everything meant for people goes to stderr. `--quiet` leaves only errors. Every write is
flushed at once, so that a log that interleaves stdout and stderr keeps them in order.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """`--quiet` and `--json`, the same on every command that has a summary."""
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    group.add_argument(
        "--json",
        action="store_true",
        help="print a machine-readable summary (one JSON object) on stdout; the text for "
        "people goes to stderr",
    )


def format_rate(per_second: float) -> str:
    """Three significant figures below a hundred (`12.5`, `0.208`), whole numbers above."""
    if per_second >= 99.95:
        return f"{per_second:,.0f}"
    if per_second <= 0:
        return "0"
    return f"{per_second:.3g}"


def format_duration(seconds: float) -> str:
    """`0.4s`, `12s`, `3m05s`, `2h07m`: as precise as a person reading it needs."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _plain(value: Any) -> Any:
    """A value JSON can hold: paths as strings, the rest as they are."""
    return str(value) if isinstance(value, Path) else value


@dataclass
class Output:
    """Where one command's text goes, as its `--quiet`/`--json` flags say.

    The streams default to the process's own, looked up when written to, so that a test
    that swaps `sys.stdout`/`sys.stderr` sees the output.
    """

    command: str
    quiet: bool = False
    as_json: bool = False
    stdout: IO[str] | None = None
    stderr: IO[str] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str) -> Output:
        return cls(command, quiet=bool(args.quiet), as_json=bool(args.json))

    @property
    def progress(self) -> bool:
        """Whether progress is shown at all (a bar on a terminal, periodic lines otherwise)."""
        return not self.quiet

    @property
    def human(self) -> IO[str]:
        """The stream for people: stderr."""
        return self.stderr or sys.stderr

    def _write(self, text: str, stream: IO[str]) -> None:
        print(text, file=stream, flush=True)

    def say(self, text: str) -> None:
        """A line for people (a header, a note) on stderr; nothing with --quiet."""
        if not self.quiet:
            self._write(text, self.human)

    def result(self, text: str) -> None:
        """The text a person runs the command for (a table, a report): on stdout, or on
        stderr when stdout carries the JSON summary; nothing with --quiet."""
        if self.quiet:
            return
        self._write(text, self.human if self.as_json else (self.stdout or sys.stdout))

    def summary(self, figures: dict[str, Any], text: str | None = None) -> None:
        """End the command: `figures` as JSON on stdout with --json, and `text` for people."""
        if text is not None:
            self.result(text)
        if self.as_json:
            document = {"command": self.command, **{k: _plain(v) for k, v in figures.items()}}
            self._write(json.dumps(document, default=str), self.stdout or sys.stdout)
