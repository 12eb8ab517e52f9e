"""A rebuild lease kept as a record on a server that has no lock and no compare-and-set (a
Qdrant collection's metadata, a Pinecone record): {"holder": Holder | None, "last": name}.

Claiming is Fischer's timed mutual exclusion: read the record; when no unexpired holder is
there, write this holder, wait `settle` seconds (longer than any claimant's read-to-write
time, which each claimant checks of itself), and read it back: the one whose write landed
last finds itself and holds the lease, the others find it and back off. The holder renews
its expiry every `ttl / 3` s from a thread; a holder killed mid-rebuild stops renewing and its
lease lapses after `ttl` s. A holder that stalled past its expiry (and may have been taken
over) learns it from `check()`, which the rebuild calls just before its swap.

The record also keeps `last`, the last generation name handed out, so that a name is never
reused even after its generation is dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Protocol

from embedrec.stores.errors import AliasBusy, CorruptStore, StoreError, StoreUnavailable
from embedrec.stores.lifecycle import generations
from embedrec.stores.lifecycle.file_lease import STARTING
from embedrec.stores.lifecycle.leases import Holder

TTL_S = 30.0
CLAIM_TRIES = 5


class Record(Protocol):
    where: str

    def read(self) -> dict[str, Any] | None: ...

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record; returns once a read shows it."""
        ...


def _holder(data: dict[str, Any], where: str) -> Holder | None:
    raw = data.get("holder")
    return None if raw is None else Holder.from_json(raw, where)


def _last(data: dict[str, Any], where: str) -> str | None:
    last = data.get("last")
    if last is not None and not (isinstance(last, str) and generations.NAME.fullmatch(last)):
        raise CorruptStore(f"{where}: not a generation counter: {last!r:.100}")
    return last


def reserve(record: Record, taken: Iterable[str]) -> str:
    """A generation name never handed out before (see file.reserve); exclusive under the
    rebuild lease, which every rebuild holds when it asks."""
    data = record.read() or {}
    last = _last(data, record.where)
    name = generations.next_name([*taken, *([last] if last else [])])
    record.write({**data, "last": name})
    return name


def running(record: Record) -> Holder | None:
    """The holder of the lease while it is held (not lapsed), else None."""
    holder = _holder(record.read() or {}, record.where)
    return holder if holder is not None and (holder.expires or 0) > time.time() else None


class TimedLease:
    """A held timed lease (see the module doc)."""

    def __init__(self, record: Record, holder: Holder, ttl: float) -> None:
        self.record = record
        self.holder = holder
        self.ttl = ttl
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost: Holder | None = None
        self._thread = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
        self._thread.start()

    @classmethod
    def claim(
        cls, record: Record, me: Holder, *, settle: float, ttl: float | None = None
    ) -> tuple[TimedLease | None, Holder | None]:
        """(the lease, None), or (None, the holder in the way); `ttl` defaults to TTL_S."""
        ttl = TTL_S if ttl is None else ttl
        for _ in range(CLAIM_TRIES):
            began = time.monotonic()
            data = record.read() or {}
            other = _holder(data, record.where)
            if other is not None and (other.expires or 0) > time.time():
                return None, other
            mine = replace(me, expires=time.time() + ttl)
            record.write({**data, "holder": mine.to_json()})
            if time.monotonic() - began > settle / 2:  # too slow to be sure: undo, retry
                cls._clear(record, mine)
                time.sleep(random.uniform(0, settle))
                continue
            time.sleep(settle)
            now = _holder(record.read() or {}, record.where)
            if now is None or now.token != mine.token:
                return None, now or STARTING
            return cls(record, mine, ttl), None
        raise StoreUnavailable(
            f"{record.where}: the rebuild lease could not be claimed: each write took over "
            f"{settle / 2:g} s"
        )

    @staticmethod
    def _clear(record: Record, mine: Holder) -> None:
        data = record.read() or {}
        current = _holder(data, record.where)
        if current is not None and current.token == mine.token:
            record.write({**data, "holder": None})

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                with self._lock:
                    data = self.record.read() or {}
                    current = _holder(data, self.record.where)
                    if current is None or current.token != self.holder.token:
                        self._lost = current or STARTING
                        return
                    self.holder = replace(self.holder, expires=time.time() + self.ttl)
                    self.record.write({**data, "holder": self.holder.to_json()})
            except StoreError:  # unreachable for a moment: check() sees the expiry
                continue

    def _write_holder(self, holder: Holder) -> None:
        with self._lock:
            data = self.record.read() or {}
            self.record.write({**data, "holder": holder.to_json()})
            self.holder = holder

    def building(self, generation: str) -> None:
        self.check()
        self._write_holder(self.holder.building(generation))

    def check(self) -> None:
        with self._lock:
            current = _holder(self.record.read() or {}, self.record.where)
            if current is None or current.token != self.holder.token:
                self._lost = current or STARTING
        if self._lost is not None:
            raise AliasBusy(
                f"{self.record.where}: this rebuild's lease lapsed and was taken by "
                f"{self._lost.describe()}; nothing was swapped"
            )
        if (self.holder.expires or 0) <= time.time():
            raise AliasBusy(
                f"{self.record.where}: this rebuild's lease lapsed (not renewed for "
                f"{self.ttl:g} s); nothing was swapped"
            )

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._lost is None:
                self._clear(self.record, self.holder)
