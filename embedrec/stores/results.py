"""What stores hand back: records, search hits (as columns that read as a sequence of
`Hit`), and the read-only metadata hits share with the store."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn, overload

import numpy as np

MetadataValue = str | int | float | bool | list[str]
MetadataOrNone = dict[str, MetadataValue] | None


@dataclass(slots=True)
class Record:
    id: str
    vector: np.ndarray
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


class Hit(NamedTuple):
    """A search result. `score` is higher-is-more-similar for every metric: the inner product
    for cosine and dot, the negated squared distance for l2.

    A named tuple: immutable and unpackable (`id, score, meta = hit`). Searches return
    `Hits`, which build them on access."""

    id: str
    score: float
    metadata: MetadataOrNone = None


_hit = functools.partial(tuple.__new__, Hit)
"""Hit((id, score, metadata)) built in C, without Hit.__new__'s Python frame."""


class Hits(Sequence[Hit]):
    """One query's hits, best first, held as three parallel lists: `ids`, `scores` and
    `metadata`. It reads as a sequence of `Hit` (index, slice, iterate, unpack, compare with a
    list of hits), but a `Hit` is built only when one is asked for.

    Why columns: FAISS answers a batch as arrays, and a Python object per hit costs a
    measurable share of a small HNSW search (the "read all" column of
    `benchmarks/faiss_store.py`). Callers that need only ids and
    scores (recall, a response body) read the columns and never build one. For the same
    reason a store may hand over the metadata as a function that reads it on first access
    from a snapshot taken at search time."""

    __slots__ = ("_metadata", "ids", "scores")

    def __init__(
        self,
        ids: list[str] | None = None,
        scores: list[float] | None = None,
        metadata: list[MetadataOrNone] | Callable[[], list[MetadataOrNone]] | None = None,
    ) -> None:
        if ids is None:  # locals, not attributes, are read: every search makes one
            ids = []
        if scores is None:
            scores = [0.0] * len(ids)
        elif len(scores) != len(ids):
            raise ValueError(f"{len(ids)} ids for {len(scores)} scores")
        self.ids, self.scores = ids, scores
        self._metadata = metadata if metadata is not None else [None] * len(ids)

    @property
    def metadata(self) -> list[MetadataOrNone]:
        if callable(self._metadata):
            self._metadata = self._metadata()
        return self._metadata

    @classmethod
    def of(cls, hits: Iterable[Hit]) -> Hits:
        rows = list(hits)
        return cls([h[0] for h in rows], [h[1] for h in rows], [h[2] for h in rows])

    def take(self, positions: Iterable[int]) -> Hits:
        """The hits at `positions`, in that order."""
        ids, scores, metadata = self.ids, self.scores, self.metadata
        at = list(positions)
        return Hits([ids[n] for n in at], [scores[n] for n in at], [metadata[n] for n in at])

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> Hit: ...
    @overload
    def __getitem__(self, i: slice) -> Hits: ...
    def __getitem__(self, i: int | slice) -> Hit | Hits:
        if isinstance(i, slice):
            return Hits(self.ids[i], self.scores[i], self.metadata[i])
        return _hit((self.ids[i], self.scores[i], self.metadata[i]))

    def __iter__(self) -> Iterator[Hit]:
        return map(_hit, zip(self.ids, self.scores, self.metadata, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            return (self.ids, self.scores, self.metadata) == (
                other.ids,
                other.scores,
                other.metadata,
            )
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple]:
        return (Hits, (self.ids, self.scores, self.metadata))  # the metadata, not its snapshot

    def __repr__(self) -> str:
        return f"Hits({list(self)!r})"


class FrozenMetadata(dict):
    """A record's metadata as a store holds it: a dict that refuses changes, so that hits can
    share it instead of copying it per hit. `dict(m)` or `m.copy()` gives a mutable copy."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a hit's metadata is read-only: change a copy, dict(hit.metadata)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (dict, (dict(self),))
