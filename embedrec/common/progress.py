"""Progress of a long loop: a tqdm bar on a terminal, a periodic one-line record otherwise.

A bar redrawn with carriage returns turns a log file or a CI transcript into one unreadable
line, so when the stream is not a TTY the same progress goes out as a plain line at most every
`every_s` seconds (and once at the end): done/total, rate, eta and the latest statistics.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

from embedrec.common.output import format_duration, format_rate


def _stats(stats: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
    )


class Progress:
    """`with Progress(total, "two-tower", "epochs") as bar: bar.update(1, loss=0.3)`."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        *,
        enabled: bool = True,
        stream: IO[str] | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = self.shown = 0
        self.stats: dict[str, Any] = {}
        self.started = self.last = time.monotonic()
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream) if tty else None

    def update(self, n: int = 1, **stats: Any) -> None:
        self.done += n
        self.stats.update(stats)
        if self.bar is not None:
            if stats:
                self.bar.set_postfix(stats, refresh=False)
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every_s:
            self._line()

    def describe(self, desc: str) -> None:
        """Name what is being done now (e.g. the store a benchmark is on)."""
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def line(self) -> str:
        """The one-line record: `desc: done/total unit, rate, eta, stats`."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total:,}" if self.total is not None else ""
        parts = [
            f"{self.desc}: {self.done:,}{of} {self.unit}",
            f"{format_rate(rate)} {self.unit}/s",
        ]
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"eta {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
        if self.stats:
            parts.append(_stats(self.stats))
        return ", ".join(parts)

    def _line(self) -> None:
        self.last, self.shown = time.monotonic(), self.done
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.shown != self.done:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
