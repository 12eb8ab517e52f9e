"""What an ingest is asked to do and what it reports: options, summary, the rejects file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from embedrec.common.output import format_rate
from embedrec.ingestion.rows import Reject


@dataclass(frozen=True)
class RejectLimit:
    """`--max-rejects`: a number of rejected rows (`N`), past which the run aborts at once,
    or a share of the rows read (`P%`), judged when the run has read them all (an early
    share says little: the first row rejected is 100%)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, value: int | str | None) -> RejectLimit | None:
        if value is None:
            return None
        text = str(value).strip()
        try:
            if text.endswith("%"):
                percent = float(text[:-1])
                if 0 <= percent <= 100:
                    return cls(percent=percent)
            elif not isinstance(value, bool) and int(text) >= 0:
                return cls(count=int(text))
        except ValueError:
            pass
        raise ValueError(
            f"max rejects {value!r}: give a number of rows (10) or a share of the rows read "
            "(5%), from 0"
        )

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.count} rows"

    def passed_by(self, rejected: int, rows_read: int, *, done: bool) -> bool:
        """Whether `rejected` of `rows_read` is over the limit: a count at any time, a share
        once the run is `done`."""
        if self.count is not None:
            return rejected > self.count
        return done and rows_read > 0 and 100 * rejected / rows_read > (self.percent or 0)


@dataclass
class IngestOptions:
    batch_size: int = 256
    checkpoint_seconds: float = 5.0
    rejects: Path | None = None
    max_rejects: int | str | None = None
    """`RejectLimit.parse` takes it: N rows, or "P%" of the rows read."""
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
    def all_rejected(self) -> bool:
        """Rows were read and every one of them was rejected."""
        return self.rows_read > 0 and self.rejected >= self.rows_read

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

    def __init__(self, summary: IngestSummary, limit: RejectLimit):
        self.summary = summary
        if limit.count is not None:
            what = f"aborted after {summary.rejected} rejected rows (limit {limit.count})"
        else:
            share = 100 * summary.rejected / max(summary.rows_read, 1)
            what = (
                f"{summary.rejected} of {summary.rows_read} rows read were rejected "
                f"({share:.1f}%, limit {limit})"
            )
        super().__init__(
            f"{what}; see {summary.rejects_path}. Rows already upserted are kept: fix the "
            "catalog and rerun to resume"
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
