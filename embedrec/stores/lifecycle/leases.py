"""Rebuild leases: one rebuild per alias at a time, for the whole rebuild.

A rebuild holds its alias's lease from before it looks for leftover generations until after
its swap. The lease names its holder (`Holder`: pid, host, start, the generation it builds),
so that a second rebuild can say which one runs, and so that nothing takes the generation
being built for a leftover: only the holder removes unlisted generations, and while it holds
the lease no other rebuild is writing one. Two kinds, by where the alias lives:

- `file.FileLease`: an flock on a lock file beside the alias (FAISS, qdrant+edge,
  qdrant+local). The kernel releases it when the holder exits, even by kill -9.
- `timed.TimedLease`: a record on the server (a Qdrant collection's metadata, a Pinecone
  record) with an expiry, renewed by a thread while the rebuild runs; a crashed holder's
  lease lapses after `ttl` seconds and the next rebuild takes it over.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from embedrec.stores.errors import AliasBusy, CorruptStore

POLL_S = 0.5
"""How often a rebuild started with `--wait` looks again."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) an alias's rebuild lease."""

    token: str
    """Unique per claim: tells this holder from a later one with the same pid."""
    pid: int
    host: str
    started: float
    """Seconds since the epoch."""
    expires: float | None = None
    """For a timed lease: when it lapses unless renewed."""
    generation: str | None = None
    """The generation it builds, once it has one."""

    @classmethod
    def me(cls) -> Holder:
        return cls(uuid.uuid4().hex, os.getpid(), socket.gethostname(), time.time())

    def building(self, generation: str) -> Holder:
        return replace(self, generation=generation)

    def describe(self) -> str:
        if not self.token:  # a lease claimed a moment ago, its holder not yet written
            return "another process that is just starting"
        since = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        what = f", building {self.generation}" if self.generation else ""
        return f"pid {self.pid} on {self.host}, started {since}{what}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Holder:
        try:
            holder = cls(**raw)
            ok = isinstance(holder.token, str) and isinstance(holder.pid, int)
            ok = ok and isinstance(holder.host, str) and isinstance(holder.started, int | float)
        except TypeError:
            ok = False
        if not ok:
            raise CorruptStore(f"{where}: not a rebuild lease holder: {raw!r:.200}")
        return holder


class Lease(Protocol):
    """A held rebuild lease."""

    holder: Holder

    def building(self, generation: str) -> None:
        """Record the generation this rebuild writes, so that nothing drops it."""
        ...

    def check(self) -> None:
        """`AliasBusy` when the lease is no longer this holder's (a timed lease taken over
        after it lapsed): the caller must not swap."""
        ...

    def release(self) -> None: ...


Claim = Callable[[Holder], tuple[Lease | None, Holder | None]]
"""One try at the lease for a holder: (the lease, None), or (None, the holder in the way)."""


@contextlib.contextmanager
def held(claim: Claim, alias: str, *, wait: bool, say: Say) -> Iterator[Lease]:
    """Hold the lease for the block. Without `wait`, a holder in the way is an `AliasBusy`
    naming it; with it, wait until that holder is gone (a timed one: or lapsed)."""
    me = Holder.me()
    told = None
    while True:
        lease, other = claim(me)
        if lease is not None:
            break
        assert other is not None
        if not wait:
            raise AliasBusy(
                f"{alias} is being rebuilt by {other.describe()}; wait for it with "
                "`embedrec ingest ... --rebuild --wait`, or run again after it ends"
            )
        if other.token != told:
            say(f"waiting for the rebuild of {alias} by {other.describe()}")
            told = other.token
        time.sleep(POLL_S)
    try:
        yield lease
    finally:
        lease.release()
