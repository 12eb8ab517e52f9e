"""The retrieval client: similar items, recommendations and search over any store.

A `Recommender` holds one store per vector space (text, image, two-tower items), each
optionally with a replica holding the same records, plus the embedders and the two-tower
model those spaces need.

Exclusions (the item itself for `similar`, the user's seen items for `recommend`) go to the
store with the query (`VectorStore.search(..., exclude=)`): FAISS and Qdrant leave them out
of the search itself; Pinecone over-fetches, asking again with a larger k while a row is
short, up to k + |excluded|, which is sure to suffice. k results thus come back whenever k
eligible records exist.

Failover: every store call goes through a `Failover` (see `embedrec.retrieval.failover`),
which falls back to the replica when the primary fails, and counts it
(`Recommender.fallback_counts`).

Reload: each space is one immutable `Space` bundle (`embedrec.retrieval.spaces`); a request
reads its space once and works on that bundle to the end, and `swap` replaces a space with
one assignment, so a reload (`embedrec.retrieval.reload`) needs no lock on the request path.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.embedders import Embedder
from embedrec.embedders.base import CatalogRow
from embedrec.embedders.two_tower import TwoTowerModel
from embedrec.retrieval.config import ServeConfig, load_serve_config
from embedrec.retrieval.events.histories import LiveHistories, LiveRead
from embedrec.retrieval.failover import Failover
from embedrec.retrieval.history import Events, Histories, Interaction
from embedrec.retrieval.spaces import LiveTokens, Space, TokenFn, make_space, open_space
from embedrec.retrieval.user_queries import Request, UserRows, check_history, user_queries
from embedrec.retrieval.users import Interactions, items_without_interactions, read_users
from embedrec.stores import Hit, Hits, StoreError
from embedrec.stores.errors import ConfigError
from embedrec.stores.filters import Node, matches, parse_filter

SPACES = ("text", "image", "two-tower")
POPULAR_CHUNK = 256


class ItemNotFound(StoreError, LookupError):
    """An item id the space's store does not hold."""


class SpaceNotConfigured(StoreError, ValueError):
    """A query for a vector space (or the user data) this recommender was not given."""


@dataclass(slots=True)
class Results:
    hits: Hits
    source: str
    """What answered: the space searched ("text", "image", "two-tower"), or for
    `recommend` also "features" (a new user's feature-only vector), "history" (a vector
    from a request's history alone) or "popularity"."""
    unknown_history: int = 0
    """`recommend` with a history: how many of its item ids were dropped as unknown."""

    missing_features: tuple[str, ...] = ()
    """For "features": the user features the request left out or blank, each taken as its
    unknown bucket (as a blank cell in training)."""

    @property
    def score_kind(self) -> str:
        """What a hit's score is: "interactions" (the item's count in the user data) for
        popularity, else "similarity" (the store's score, higher is closer)."""
        return "interactions" if self.source == "popularity" else "similarity"


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


class Recommender:
    """Similar items, recommendations and search over one store per vector space."""

    def __init__(
        self,
        *,
        text: Failover | None = None,
        image: Failover | None = None,
        two_tower: Failover | None = None,
        text_embedder: Embedder | None = None,
        image_embedder: Embedder | None = None,
        model: TwoTowerModel | None = None,
        interactions: Interactions | None = None,
        similar_space: str | None = None,
        spaces: Sequence[Space] = (),
        histories: Histories | None = None,
    ) -> None:
        """Spaces from their stores and query side (`text` with `text_embedder`, ...), or
        built already (`spaces`, as `from_config` and a reload open them). `histories`:
        where a sequence user encoder reads users' recent interactions (default: the
        training interactions of `interactions`)."""
        users = interactions.users if interactions is not None else None
        given = {s.name: s for s in spaces}
        for name, fo, kw in (
            ("text", text, {"embedder": text_embedder}),
            ("image", image, {"embedder": image_embedder}),
            ("two-tower", two_tower, {"model": model, "users": users}),
        ):
            if fo is not None:
                given[name] = make_space(name, fo, **kw)
        self._spaces = {name: given[name] for name in SPACES if name in given}
        if not self._spaces:
            raise ConfigError("a Recommender needs at least one space (text, image, two-tower)")
        if interactions is not None and "two-tower" not in self._spaces:
            raise ConfigError("user data serves recommend(), which needs the two-tower model")
        self._fallbacks: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()
        for space in self._spaces.values():
            space.failover.on_fallback = self._count_fallback
        self.interactions = interactions
        self.histories = histories or (interactions.histories if interactions else None)
        self.similar_space = similar_space or next(
            s for s in ("two-tower", "text", "image") if s in self._spaces
        )
        if self.similar_space not in self._spaces:
            raise ConfigError(f"similar_space {self.similar_space!r} is not configured")
        # tokenizers and some torch modules are not safe to call from several threads at once
        self._embed_locks = {name: threading.Lock() for name in SPACES}
        self._popularity = dict(interactions.popularity) if interactions is not None else {}
        # known users' declared features, which a sequence encoder reads at request time
        self._user_rows = UserRows(users) if users is not None else None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: ServeConfig | str | Path, *, token: TokenFn | None = None
    ) -> Recommender:
        """Open the stores, embedders, model and user data a serve config names. Should any
        step fail, the stores opened before it are closed again (they may hold file locks or
        connections that a retry in the same process would trip over). `token` reads a store
        alias's live token (default: `LiveTokens`; see `embedrec.retrieval.reload`)."""
        token = token or LiveTokens()
        if not isinstance(config, ServeConfig):
            config = load_serve_config(config)
        interactions = None
        if config.users is not None:
            interactions = Interactions.from_frames(*read_users(config.users))
            if config.users.exclude_without_interactions:
                interactions.hidden = items_without_interactions(config.users, interactions)
        users = interactions.users if interactions is not None else None
        with ExitStack() as opened:
            spaces = [
                open_space(name, cfg, opened, users=users, token=token)
                for name, cfg in config.spaces().items()
            ]
            recommender = cls(
                spaces=spaces,
                interactions=interactions,
                similar_space=config.server.similar_space,
            )
            opened.pop_all()
        return recommender

    @property
    def spaces(self) -> list[str]:
        return list(self._spaces)

    def space(self, name: str) -> Space:
        """The space serving now (`SpaceNotConfigured` for one this recommender lacks)."""
        return self._space(name)

    def swap(self, space: Space) -> Space:
        """Serve `space` in place of the one of its name from the next request on, and
        return the one it replaces, which requests already under way keep using until they
        finish: one assignment of a new dict, so a request sees the old spaces or the new
        ones, never a mix. Callers serialise swaps (`Reloader` does)."""
        old = self._space(space.name)
        space.failover.on_fallback = self._count_fallback
        self._spaces = {**self._spaces, space.name: space}
        return old

    @property
    def text_embedder(self) -> Embedder | None:
        space = self._spaces.get("text")
        return space.embedder if space is not None else None

    @property
    def image_embedder(self) -> Embedder | None:
        space = self._spaces.get("image")
        return space.embedder if space is not None else None

    @property
    def model(self) -> TwoTowerModel | None:
        space = self._spaces.get("two-tower")
        return space.model if space is not None else None

    def store_uris(self) -> dict[str, dict[str, str | None]]:
        return {name: space.describe() for name, space in self._spaces.items()}

    def is_remote(self, space: str | None) -> bool:
        """Whether calls in `space` may wait on the network; False for an unknown space."""
        found = self._spaces.get(space) if space is not None else None
        return found is not None and found.failover.remote

    def fallback_counts(self) -> dict[tuple[str, str], int]:
        """Calls served by a replica, by (space, operation)."""
        with self._count_lock:
            return dict(self._fallbacks)

    def _count_fallback(self, space: str, op: str) -> None:
        with self._count_lock:
            self._fallbacks[(space, op)] += 1

    def warmup(self) -> None:
        """Load the embedders' weights now rather than on the first query."""
        for space in self._spaces.values():
            self.warm(space, probe=False)

    def warm(self, space: Space, *, probe: bool = True) -> None:
        """Load `space`'s embedder weights and, with `probe`, touch its store's index with one
        search, so that the first request after a swap costs what any other does."""
        if space.name == "text":
            self._embed(space, ["warm up"])
        elif space.name == "image":
            self._embed(space, [np.zeros((32, 32, 3), dtype=np.uint8)])
        if probe:
            query = np.ones((1, space.dim), dtype=np.float32)
            space.failover.call("search", lambda s: s.search(query, 1))

    def close(self) -> None:
        for space in self._spaces.values():
            space.failover.close()

    # -- helpers -------------------------------------------------------------------------

    def _space(self, name: str) -> Space:
        found = self._spaces.get(name)
        if found is not None:
            return found
        if name not in SPACES:
            raise SpaceNotConfigured(f"unknown space {name!r}; spaces are {', '.join(SPACES)}")
        raise SpaceNotConfigured(
            f"this service has no {name} space; it serves {', '.join(self._spaces)}"
        )

    def _embed(self, space: Space, batch: Sequence[Any]) -> np.ndarray:
        assert space.embedder is not None  # make_space checks that text and image have one
        with self._embed_locks[space.name]:
            return space.embedder.embed(batch)

    def embed_rows(self, space: Space, rows: Sequence[CatalogRow]) -> np.ndarray:
        """Vectors of catalogue rows in `space`, under the lock that requests take: what a
        catalogue event upserts. Two-tower: the item tower, from the id and metadata."""
        with self._embed_locks[space.name]:
            if space.name == "two-tower":
                assert space.model is not None  # make_space checks
                return space.model.item_vectors([{"id": r.id, **r.metadata} for r in rows])
            assert space.embedder is not None  # make_space checks
            return space.embedder.embed([space.embedder.prepare(r) for r in rows])

    @staticmethod
    def _search(
        space: Space,
        vectors: np.ndarray,
        k: int,
        node: Node | None,
        exclude: Sequence[frozenset[str] | set[str]],
    ) -> list[Hits]:
        """Top-k per query row with each row's excluded ids left out (see the module doc);
        the filter comes parsed, once, and the store takes it as it is."""
        return space.failover.call(
            "search", lambda s: s.search(vectors, k, filter=node, exclude=exclude)
        )

    # -- similar items ---------------------------------------------------------------------

    def similar(
        self, item_id: str, k: int = 10, filter: Mapping | None = None, *, space: str | None = None
    ) -> Results:
        """The k items nearest `item_id` in `space` (default: `similar_space`), itself left out."""
        return self.similar_batch([item_id], k, filter, space=space)[0]

    def similar_batch(
        self,
        item_ids: Sequence[str],
        k: int = 10,
        filter: Mapping | None = None,
        *,
        space: str | None = None,
    ) -> list[Results]:
        k = _check_k(k)
        node = parse_filter(filter) if filter is not None else None
        name = space or self.similar_space
        found = self._space(name)
        fo = found.failover
        ids = [str(i) for i in item_ids]
        if not ids:
            return []
        unique = list(dict.fromkeys(ids))
        held, matrix = fo.call("fetch", lambda s: s.fetch_vectors(unique))
        rows = {i: n for n, i in enumerate(held)}
        missing = [i for i in unique if i not in rows]
        if missing:
            raise ItemNotFound(f"item {missing[0]!r} is not in the {name} store {fo.primary.uri}")
        vectors = matrix[[rows[i] for i in ids]]
        hits = self._search(found, vectors, k, node, [frozenset((i,)) for i in ids])
        return [Results(h, name) for h in hits]

    # -- search ----------------------------------------------------------------------------

    def search_text(self, query: str, k: int = 10, filter: Mapping | None = None) -> Results:
        return self.search_text_batch([query], k, filter)[0]

    def search_text_batch(
        self, queries: Sequence[str], k: int = 10, filter: Mapping | None = None
    ) -> list[Results]:
        return self._search_inputs("text", queries, k, filter)

    def search_image(self, image: Any, k: int = 10, filter: Mapping | None = None) -> Results:
        """`image`: a PIL image, a uint8 array, a file path or encoded bytes."""
        return self.search_image_batch([image], k, filter)[0]

    def search_image_batch(
        self, images: Sequence[Any], k: int = 10, filter: Mapping | None = None
    ) -> list[Results]:
        return self._search_inputs("image", images, k, filter)

    def _search_inputs(
        self, space: str, inputs: Sequence[Any], k: int, filter: Mapping | None
    ) -> list[Results]:
        k = _check_k(k)
        node = parse_filter(filter) if filter is not None else None
        found = self._space(space)
        if not len(inputs):
            return []
        vectors = self._embed(found, list(inputs))
        hits = self._search(found, vectors, k, node, [frozenset()] * len(inputs))
        return [Results(h, space) for h in hits]

    # -- recommendations -------------------------------------------------------------------

    def recommend(
        self,
        user_id: str | None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: Mapping | None = None,
        features: Mapping[str, Any] | None = None,
        history: Sequence[str | Interaction] | None = None,
        now: float | None = None,
    ) -> Results:
        """Top-k items for a user from the two-tower model.

        A known user gets their learned vector (under the sequence encoder, one computed now
        from their recent history in `histories` followed by `history`); a user with no id
        or an unknown one, a vector from `history` (item ids oldest first, or `Interaction`s
        with timestamps; at most `HISTORY_CAP`, else `HistoryTooLong`), else from `features`
        (the user features the model declares; `FeatureError` names one it does not), else
        the most rated items. History ids the store lacks are dropped and counted
        (`Results.unknown_history`); the history's items are left out with the seen ones.
        `now` (epoch seconds; default: the time of the call) is when the history is read, as
        a sequence model with `staleness_buckets` needs it.
        """
        return self.recommend_batch(
            [user_id],
            k,
            exclude_seen=exclude_seen,
            filter=filter,
            features=None if features is None else [features],
            history=None if history is None else [history],
            now=None if now is None else [now],
        )[0]

    def recommend_batch(
        self,
        user_ids: Sequence[str | None],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: Mapping | None = None,
        features: Sequence[Mapping[str, Any] | None] | None = None,
        history: Sequence[Sequence[str | Interaction] | None] | None = None,
        now: Sequence[float | None] | None = None,
    ) -> list[Results]:
        """`recommend` for each user; `features`, `history`, `now`: one per user (or None)."""
        k = _check_k(k)
        node = parse_filter(filter) if filter is not None else None
        space = self._space("two-tower")
        model = space.model
        assert model is not None  # make_space checks that the two-tower space has one
        ids = [None if u is None else str(u) for u in user_ids]
        feats: Sequence[Mapping[str, Any] | None] = features or [None] * len(ids)
        asked = history if history is not None else [None] * len(ids)
        at = now if now is not None else [None] * len(ids)
        if len(feats) != len(ids) or len(asked) != len(ids) or len(at) != len(ids):
            raise ValueError(f"features, history, now: one entry for each of {len(ids)} users")
        for uid, h in zip(ids, asked, strict=True):
            check_history(h or (), uid)
        requests = [
            Request(uid, None if f is None else model.validate_user(f), Events.of(h or ()), t)
            for uid, f, h, t in zip(ids, feats, asked, at, strict=True)
        ]  # features are checked against the model's declaration, known user or not
        live = self._live(ids)  # read once: the events that arrived since training
        histories = self.histories
        if isinstance(histories, LiveHistories):
            histories = histories.view(live)
        queries = user_queries(space, requests, histories, self._user_rows)
        seen = self.interactions.seen if self.interactions is not None else {}
        exclude = [
            _joined(seen.get(u or "", frozenset()), q.items | live.items(u))
            if exclude_seen
            else frozenset()
            for u, q in zip(ids, queries, strict=True)
        ]
        if self.interactions is not None and self.interactions.hidden:
            exclude = [ex | self.interactions.hidden for ex in exclude]
        out: list[Results | None] = [None] * len(ids)
        order = [n for n, q in enumerate(queries) if q.vector is not None]
        if order:
            matrix = np.array([queries[n].vector for n in order], dtype=np.float32)
            hits = self._search(space, matrix, k, node, [exclude[n] for n in order])
            for n, h in zip(order, hits, strict=True):
                q = queries[n]
                gaps = model.towers.user.missing(feats[n] or {}) if q.source == "features" else ()
                out[n] = Results(h, q.source, q.unknown, tuple(gaps))
        for n, q in enumerate(queries):
            if out[n] is None:
                out[n] = Results(self._popular(space, k, node, exclude[n]), q.source, q.unknown)
        if isinstance(self.histories, LiveHistories):
            self.histories.settle(live, ids, out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def _live(self, ids: Sequence[str | None]) -> LiveRead:
        """The users' interactions that arrived as events (embedrec.retrieval.live), read
        once per request; none without live histories."""
        if isinstance(self.histories, LiveHistories):
            return self.histories.read([u for u in ids if u is not None])
        return LiveRead()

    def _popular(self, space: Space, k: int, node: Node | None, exclude: Iterable[str]) -> Hits:
        """The most rated items that match the filter, scored by their rating counts."""
        if self.interactions is None:
            raise SpaceNotConfigured(
                "unknown user and no user data to rank popular items: configure [users], "
                "or send the new user's features"
            )
        fo = space.failover
        excluded = set(exclude)
        ranked = [i for i, _ in self.interactions.popularity if i not in excluded]
        out: list[Hit] = []
        for start in range(0, len(ranked), POPULAR_CHUNK):
            chunk = ranked[start : start + POPULAR_CHUNK]
            for rec in fo.call("fetch", lambda s, chunk=chunk: s.fetch(chunk)):
                if node is None or matches(rec.metadata, node):
                    out.append(Hit(rec.id, float(self._popularity[rec.id]), rec.metadata))
                    if len(out) == k:
                        return Hits.of(out)
        return Hits.of(out)


def _joined(seen: frozenset[str], more: frozenset[str]) -> frozenset[str]:
    """`seen` itself when `more` adds nothing to it (most requests: a known user's stored
    history is among their seen items): the same object, whose hash Python keeps and whose
    slots the store caches, not a copy to hash, compare and look up again."""
    return seen if more <= seen else seen | more
