"""Generations behind an alias: the types every backend's alias book shares.

An alias is a store name that points at one physical store, its live generation; a rebuild
writes a new generation beside it and swaps the pointer in one atomic step, keeping the old
one as `previous` for a rollback. Each backend keeps the pointer in its own way (a file for
path-based stores, Qdrant's collection aliases, a reserved Pinecone record); see aliases.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from embedrec.stores.errors import ConfigError, GenerationChanged

if TYPE_CHECKING:
    from embedrec.stores.lifecycle.leases import Holder, Lease

NAME = re.compile(r"g(\d{4,9})")
"""A generation's name: `g` and a number, monotonic per alias (`g0000` is an adopted store)."""
ADOPTED = "g0000"


@dataclass(frozen=True)
class Generation:
    name: str
    """e.g. "g0003"."""
    uri: str
    """The physical store's URI, openable with `open_store` / `open_existing`."""


@dataclass(frozen=True)
class AliasState:
    alias: str
    """The alias URI as given (redacted)."""
    live: Generation | None
    previous: tuple[Generation, ...] = ()
    """Newest first: what `rollback` goes back to."""
    unlisted: tuple[Generation, ...] = field(default=())
    """Generations that exist but are neither live nor previous: what an interrupted or
    failed rebuild left, or what a rollback stepped back from."""


@dataclass(frozen=True)
class Fingerprint:
    """What a swap checks that it installs the generation its caller validated: its live
    count and a digest of what the backend commits (see each book's `fingerprint`)."""

    name: str
    count: int
    digest: str


class AliasBook(Protocol):
    """The pointer of one alias, in its backend's terms."""

    def state(self) -> AliasState: ...

    def live_token(self) -> str | None:
        """Cheap (one small read); changes exactly when the alias is swapped or rolled
        back; None for a plain store or nothing at all."""
        ...

    def adopt(self) -> Generation | None:
        """Make a plain store that already sits at the alias's name its generation `g0000`,
        live, with nothing in it lost; None when there is none (or it is already an alias)."""
        ...

    def generation(self, name: str) -> Generation:
        """The generation called `name` (it need not exist)."""
        ...

    def new_generation(self) -> Generation:
        """A fresh physical name, not yet live, never handed out before for this alias (a
        counter kept with the alias); exclusive under the rebuild lease."""
        ...

    def rebuild_lease(
        self, *, wait: bool = False, say: Callable[[str], None] = lambda text: None
    ) -> AbstractContextManager[Lease]:
        """Hold the alias's rebuild lease for the block (leases/): `AliasBusy` naming the
        running rebuild, or with `wait` wait for it to end."""
        ...

    def running(self) -> Holder | None:
        """The holder of the rebuild lease while a rebuild runs, else None."""
        ...

    def fingerprint(self, generation: Generation) -> Fingerprint:
        """The generation's count and digest now (see `Fingerprint`)."""
        ...

    def swap(self, generation: Generation, expect: Fingerprint | None = None) -> AliasState:
        """Point the alias at `generation`, atomically; the old live becomes previous[0].
        With `expect`, `GenerationChanged` unless the generation still fingerprints so."""
        ...

    def rollback(self) -> AliasState:
        """Point back at previous[0]."""
        ...

    def drop(self, generation: Generation) -> None:
        """Delete a generation that is not live and that no running rebuild builds."""
        ...


def reached(point: str) -> None:
    """A named point of a rebuild or a swap (`rebuild:ingesting`, `swap:before-replace`, ...).
    It does nothing: the failure tests replace it, in a child process, to kill that process
    exactly there instead of racing a timer."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not a generation name (g and 4-9 digits, e.g. g0003)")
    return name


def number(name: str) -> int:
    return int(check_name(name)[1:])


def next_name(taken: Iterable[str]) -> str:
    """One past the highest generation in `taken` (g0001 when there is none)."""
    highest = max((number(n) for n in taken), default=0)
    return f"g{highest + 1:04d}"


def ordered(names: Iterable[str]) -> list[str]:
    """Newest first."""
    return sorted(set(names), key=number, reverse=True)


def alias_state(
    alias: str,
    make: Callable[[str], Generation],
    live: str | None,
    previous: Sequence[str],
    existing: Iterable[str],
) -> AliasState:
    """An alias's state from generation names (`make` turns one into its `Generation`): the
    `existing` ones that are neither live nor previous are unlisted."""
    others = ordered(set(existing) - {live, *previous} - {None})
    return AliasState(
        alias=alias,
        live=make(live) if live else None,
        previous=tuple(map(make, previous)),
        unlisted=tuple(map(make, others)),
    )


def check_fingerprint(now: Fingerprint, expect: Fingerprint, alias: str) -> None:
    """`GenerationChanged` when `now` is not what the caller validated (`expect`)."""
    if now != expect:
        raise GenerationChanged(
            f"{alias}: generation {now.name} is not the one validated ({expect.count:,} "
            f"records, digest {expect.digest[:12]}) but holds {now.count:,} records, digest "
            f"{now.digest[:12]}; not swapped"
        )
