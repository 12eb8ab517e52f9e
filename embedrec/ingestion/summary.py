"""What an ingest is asked to do and what it reports: options, summary, the rejects file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from embedrec.common.output import format_rate
from embedrec.ingestion.rows import Reject


@dataclass
class IngestOptions:
    batch_size: int = 256
    checkpoint_seconds: float = 5.0
    rejects: Path | None = None
    max_rejects: int | None = None
    sync: bool = False


@dataclass
class IngestSummary:
    rows_read: int = 0
    unchanged: int = 0
    embedded: int = 0
    cache_hits: int = 0
    upserted: int = 0
    rejected: int = 0
    deleted: int = 0
    seconds: float = 0.0
    rejects_path: Path | None = None
    manifest: Path | None = None
    aborted: str | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def items(self) -> list[tuple[str, str]]:
        rows = [
            ("rows read", f"{self.rows_read:,}"),
            ("unchanged", f"{self.unchanged:,}"),
            ("embedded", f"{self.embedded:,}"),
            ("cache hits", f"{self.cache_hits:,}"),
            ("upserted", f"{self.upserted:,}"),
            ("rejected", f"{self.rejected:,}"),
            ("deleted", f"{self.deleted:,}"),
            ("seconds", f"{self.seconds:.2f}"),
            ("rows/s", format_rate(self.rows_per_s)),
        ]
        if self.rejected and self.rejects_path is not None:
            rows.append(("rejects file", str(self.rejects_path)))
        return rows


class TooManyRejects(ValueError):
    """More rows were rejected than `max_rejects` allows; what landed is checkpointed."""

    def __init__(self, summary: IngestSummary, limit: int):
        self.summary = summary
        super().__init__(
            f"aborted after {summary.rejected} rejected rows (limit {limit}); "
            f"see {summary.rejects_path}. Rows already upserted are kept: fix the catalog "
            "and rerun to resume"
        )


class RejectsFile:
    """The rejects file of this run, truncated when the run starts, written as rejects come."""

    def __init__(self, path: Path):
        self.path = path
        self.path.unlink(missing_ok=True)
        self._fh: IO[str] | None = None

    def write(self, reject: Reject) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
