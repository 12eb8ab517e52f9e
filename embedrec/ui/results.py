"""The latest `embedrec bench` and `embedrec evaluate` outputs, found under result folders.

A bench run is a folder holding `results.json` (meta, rows, operating points) beside its
PNG plots; a leaderboard is a `leaderboard.json` (rows per model and split, and the
cold-start report). The newest file found under any of the given folders is "latest".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

BENCH_FILE = "results.json"
LEADERBOARD_FILE = "leaderboard.json"
MAX_DEPTH = 4
"""How deep under a results folder files are looked for (runs nest a few levels)."""


class ResultsError(ValueError):
    """A results file that cannot be read; names the file and what is wrong."""


def find(roots: Iterable[Path], name: str) -> list[Path]:
    """Files called `name` under `roots` (up to MAX_DEPTH levels), newest first."""
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for depth in range(MAX_DEPTH + 1):
            found.update(p.resolve() for p in root.glob("/".join(["*"] * depth + [name])))
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    return data


@dataclass
class BenchRun:
    folder: Path
    meta: dict[str, Any]
    rows: pd.DataFrame
    """One row per (dataset, store, search parameter) measured."""
    points: pd.DataFrame
    """Each store's operating point per dataset: its fastest setting at the target recall."""

    @classmethod
    def load(cls, path: Path) -> BenchRun:
        data = _read_json(path)
        rows = pd.DataFrame(data.get("rows", []))
        needed = {"dataset", "store", "recall", "qps_1"}
        if not rows.empty and not needed <= set(rows.columns):
            raise ResultsError(f"{path}: rows lack {sorted(needed - set(rows.columns))}")
        points = pd.DataFrame(data.get("operating_points", []))
        if not points.empty and not rows.empty:
            keys = ["dataset", "store", "param"]
            extra = [c for c in rows.columns if c not in points.columns or c in keys]
            points = points.merge(rows[extra], on=keys, how="left")
        return cls(path.parent, data.get("meta", {}), rows, points)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(self.rows["dataset"])) if not self.rows.empty else []

    @property
    def stores(self) -> list[str]:
        return list(dict.fromkeys(self.rows["store"])) if not self.rows.empty else []

    def plots(self, dataset: str) -> list[Path]:
        """The bench's own PNG plots for `dataset` (recall vs QPS, latency)."""
        part = "".join(c if c.isalnum() or c in "-_." else "-" for c in dataset)
        return [
            p
            for kind in ("recall_qps", "latency")
            if (p := self.folder / f"{kind}_{part}.png").is_file()
        ]


@dataclass
class Leaderboard:
    path: Path
    dataset: str
    k: int
    rows: pd.DataFrame
    cold_start: pd.DataFrame
    protocol: str

    @classmethod
    def load(cls, path: Path) -> Leaderboard:
        data = _read_json(path)
        missing = [key for key in ("k", "rows") if key not in data]
        if missing:
            raise ResultsError(f"{path}: not a leaderboard (no {', '.join(missing)})")
        return cls(
            path,
            str(data.get("dataset", "")),
            int(data["k"]),
            pd.DataFrame(data["rows"]),
            pd.DataFrame(data.get("cold_start", [])),
            str(data.get("protocol", "")),
        )

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(self.rows["split"])) if "split" in self.rows else []
