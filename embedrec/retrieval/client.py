"""The retrieval client: similar items, recommendations and search over any store.

A `Recommender` holds one store per vector space (text, image, two-tower items), each
optionally with a replica holding the same records, plus the embedders and the two-tower
model those spaces need.

Exclusions (the item itself for `similar`, the user's seen items for `recommend`) go to the
store with the query (`VectorStore.search(..., exclude=)`): FAISS and Qdrant leave them out
of the search itself; Pinecone over-fetches, asking again with a larger k while a row is
short, up to k + |excluded|, which is sure to suffice. k results thus come back whenever k
eligible records exist.

Failover: every store call goes through a `Failover`. A call that raises (anything but a
`ValueError`, which is the caller's bad input) or, on a network store, outlasts `timeout_s`
is retried on the replica, with a logged warning and a counter
(`Recommender.fallback_counts`); for `cooldown_s` after that, calls go straight to the
replica. Without a replica the caller gets `StoreUnavailable` naming the store URI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from embedrec.stores import Hit, Hits, StoreError, StoreUnavailable, VectorStore, open_store
from embedrec.stores.errors import ConfigError
from embedrec.stores.filters import Node, matches, parse_filter

if TYPE_CHECKING:
    from embedrec.embedders import Embedder
    from embedrec.embedders.two_tower import TwoTowerModel
    from embedrec.retrieval.config import ServeConfig, SpaceConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    `recommend` also "features" (a new user's feature-only vector) or "popularity"."""


class Failover:
    """One space's stores: calls go to the primary, and to the replica when it fails."""

    def __init__(
        self,
        space: str,
        primary: VectorStore,
        replica: VectorStore | None = None,
        *,
        timeout_s: float | None = 2.0,
        cooldown_s: float = 5.0,
        on_fallback: Callable[[str, str], None] | None = None,
    ) -> None:
        if replica is not None and (replica.dim, replica.metric) != (primary.dim, primary.metric):
            raise ConfigError(
                f"{space} replica {replica.uri} ({replica.dim}-d, {replica.metric}) does not "
                f"match its primary {primary.uri} ({primary.dim}-d, {primary.metric})"
            )
        self.space = space
        self.primary = primary
        self.replica = replica
        self.timeout_s = timeout_s
        self.cooldown_s = cooldown_s
        self.on_fallback = on_fallback or (lambda space, op: None)
        self._down_until = 0.0
        self._pools: dict[int, ThreadPoolExecutor] = {}
        if timeout_s is not None:
            for store in (primary, replica):
                if store is not None and store.capabilities.remote:
                    self._pools[id(store)] = ThreadPoolExecutor(
                        max_workers=32, thread_name_prefix=f"{space}-store"
                    )

    @property
    def dim(self) -> int:
        return self.primary.dim

    @property
    def remote(self) -> bool:
        """Whether a call may wait on the network (a Qdrant server, Pinecone)."""
        return any(s is not None and s.capabilities.remote for s in (self.primary, self.replica))

    def _run(self, store: VectorStore, fn: Callable[[VectorStore], T]) -> T:
        pool = self._pools.get(id(store))
        if pool is None:
            return fn(store)
        future = pool.submit(fn, store)
        try:
            return future.result(timeout=self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout_s} s") from None

    def call(self, op: str, fn: Callable[[VectorStore], T]) -> T:
        """`fn(store)` on the primary, else on the replica. A `ValueError` (bad input) is
        raised as it is: another store would refuse the same input."""
        if self.replica is None or time.monotonic() >= self._down_until:
            try:
                return self._run(self.primary, fn)
            except ValueError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.replica is None:
                    raise StoreUnavailable(
                        f"{self.space} store {self.primary.uri} failed on {op}: {reason}"
                    ) from exc
                self._down_until = time.monotonic() + self.cooldown_s
                log.warning(
                    "%s store %s failed on %s (%s); using replica %s for the next %.0f s",
                    self.space,
                    self.primary.uri,
                    op,
                    reason,
                    self.replica.uri,
                    self.cooldown_s,
                )
        self.on_fallback(self.space, op)
        try:
            return self._run(self.replica, fn)
        except ValueError:
            raise
        except Exception as exc:
            raise StoreUnavailable(
                f"{self.space} store {self.primary.uri} is down and its replica "
                f"{self.replica.uri} failed on {op}: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for store in (self.primary, self.replica):
            if store is not None:
                store.close()


@dataclass
class Interactions:
    """Who the users are (id and model features) and what each has rated."""

    users: pd.DataFrame
    seen: dict[str, frozenset[str]]
    popularity: list[tuple[str, int]]
    """Item ids with their rating counts, most rated first (ties by id)."""

    @classmethod
    def from_frames(cls, users: pd.DataFrame, ratings: pd.DataFrame) -> Interactions:
        for frame, what, cols in (
            (users, "users", ["user_id"]),
            (ratings, "ratings", ["user_id", "item_id"]),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise ConfigError(f"{what} table lacks column(s) {missing}")
        users = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
        pairs = ratings[["user_id", "item_id"]].astype(str)
        seen = {u: frozenset(items) for u, items in pairs.groupby("user_id")["item_id"]}
        counts = pairs["item_id"].value_counts()
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(users.reset_index(drop=True), seen, [(i, int(c)) for i, c in order])


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str})


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
    ) -> None:
        self._spaces = {
            name: fo
            for name, fo in (("text", text), ("image", image), ("two-tower", two_tower))
            if fo is not None
        }
        if not self._spaces:
            raise ConfigError("a Recommender needs at least one space (text, image, two-tower)")
        self._fallbacks: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()
        for fo in self._spaces.values():
            fo.on_fallback = self._count_fallback
        needs = (("text", text_embedder), ("image", image_embedder), ("two-tower", model))
        for name, part in needs:
            if name in self._spaces and part is None:
                what = "a two-tower model" if name == "two-tower" else f"a {name} embedder"
                raise ConfigError(f"the {name} space needs {what}")
        for name, embedder in (("text", text_embedder), ("image", image_embedder)):
            if embedder is not None and name in self._spaces:
                store_dim = self._spaces[name].dim
                if embedder.dim != store_dim:
                    raise ConfigError(
                        f"{embedder.name} gives {embedder.dim}-d vectors but the {name} store "
                        f"{self._spaces[name].primary.uri} holds {store_dim}-d ones"
                    )
        if model is not None and two_tower is not None and model.config.dim != two_tower.dim:
            raise ConfigError(
                f"the two-tower model gives {model.config.dim}-d vectors but "
                f"{two_tower.primary.uri} holds {two_tower.dim}-d ones"
            )
        if interactions is not None and model is None:
            raise ConfigError("user data serves recommend(), which needs the two-tower model")
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        self.model = model
        self.interactions = interactions
        self.similar_space = similar_space or next(
            s for s in ("two-tower", "text", "image") if s in self._spaces
        )
        if self.similar_space not in self._spaces:
            raise ConfigError(f"similar_space {self.similar_space!r} is not configured")
        # tokenizers and some torch modules are not safe to call from several threads at once
        self._embed_locks = {"text": threading.Lock(), "image": threading.Lock()}
        self._user_vectors: dict[str, np.ndarray] = {}
        self._popularity: dict[str, int] = {}
        if interactions is not None and model is not None:
            self._popularity = dict(interactions.popularity)
            if len(interactions.users):
                vectors = model.user_vectors(interactions.users)
                self._user_vectors = dict(
                    zip(interactions.users["user_id"].tolist(), vectors, strict=True)
                )

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: ServeConfig | str | Path) -> Recommender:
        """Open the stores, embedders, model and user data a serve config names."""
        from embedrec.retrieval.config import ServeConfig, load_serve_config

        if not isinstance(config, ServeConfig):
            config = load_serve_config(config)
        kw: dict[str, Any] = {"similar_space": config.server.similar_space}
        if config.text is not None:
            from embedrec.embedders import get_embedder

            kw["text"] = _failover("text", config.text)
            kw["text_embedder"] = get_embedder(config.text.embedder)
        if config.image is not None:
            from embedrec.embedders import get_embedder

            kw["image"] = _failover("image", config.image)
            kw["image_embedder"] = get_embedder(config.image.embedder)
        if config.two_tower is not None:
            from embedrec.embedders.two_tower import TwoTowerModel

            kw["two_tower"] = _failover("two-tower", config.two_tower)
            kw["model"] = TwoTowerModel.load(config.two_tower.model)
        if config.users is not None:
            if config.users.dataset == "movielens":
                from embedrec.ingestion.datasets import load_movielens

                ml = load_movielens()
                users, ratings = ml.users, ml.ratings
            else:
                assert config.users.users is not None and config.users.ratings is not None
                users, ratings = _read_table(config.users.users), _read_table(config.users.ratings)
            kw["interactions"] = Interactions.from_frames(users, ratings)
        return cls(**kw)

    @property
    def spaces(self) -> list[str]:
        return list(self._spaces)

    def store_uris(self) -> dict[str, dict[str, str | None]]:
        return {
            name: {"primary": fo.primary.uri, "replica": fo.replica.uri if fo.replica else None}
            for name, fo in self._spaces.items()
        }

    def is_remote(self, space: str | None) -> bool:
        """Whether calls in `space` may wait on the network; False for an unknown space."""
        fo = self._spaces.get(space) if space is not None else None
        return fo is not None and fo.remote

    def fallback_counts(self) -> dict[tuple[str, str], int]:
        """Calls served by a replica, by (space, operation)."""
        with self._count_lock:
            return dict(self._fallbacks)

    def _count_fallback(self, space: str, op: str) -> None:
        with self._count_lock:
            self._fallbacks[(space, op)] += 1

    def warmup(self) -> None:
        """Load the embedders' weights now rather than on the first query."""
        if self.text_embedder is not None:
            self._embed("text", ["warm up"])
        if self.image_embedder is not None:
            self._embed("image", [np.zeros((32, 32, 3), dtype=np.uint8)])

    def close(self) -> None:
        for fo in self._spaces.values():
            fo.close()

    # -- helpers -------------------------------------------------------------------------

    def _space(self, name: str) -> Failover:
        if name not in SPACES:
            raise SpaceNotConfigured(f"unknown space {name!r}; spaces are {', '.join(SPACES)}")
        if name not in self._spaces:
            raise SpaceNotConfigured(
                f"this service has no {name} space; it serves {', '.join(self._spaces)}"
            )
        return self._spaces[name]

    def _embed(self, space: str, batch: Sequence[Any]) -> np.ndarray:
        embedder = self.text_embedder if space == "text" else self.image_embedder
        if embedder is None:
            raise SpaceNotConfigured(f"this service has no {space} embedder")
        with self._embed_locks[space]:
            return embedder.embed(batch)

    def _search(
        self,
        space: str,
        vectors: np.ndarray,
        k: int,
        filter: Mapping | None,
        exclude: Sequence[frozenset[str] | set[str]],
    ) -> list[Hits]:
        """Top-k per query row with each row's excluded ids left out (see the module doc)."""
        return self._space(space).call(
            "search", lambda s: s.search(vectors, k, filter=filter, exclude=exclude)
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
        if filter is not None:
            parse_filter(filter)
        name = space or self.similar_space
        fo = self._space(name)
        ids = [str(i) for i in item_ids]
        if not ids:
            return []
        unique = list(dict.fromkeys(ids))
        records = {r.id: r for r in fo.call("fetch", lambda s: s.fetch(unique))}
        missing = [i for i in unique if i not in records]
        if missing:
            raise ItemNotFound(f"item {missing[0]!r} is not in the {name} store {fo.primary.uri}")
        vectors = np.stack([records[i].vector for i in ids]).astype(np.float32)
        hits = self._search(name, vectors, k, filter, [frozenset((i,)) for i in ids])
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
        if filter is not None:
            parse_filter(filter)
        self._space(space)
        if not len(inputs):
            return []
        vectors = self._embed(space, list(inputs))
        hits = self._search(space, vectors, k, filter, [frozenset()] * len(inputs))
        return [Results(h, space) for h in hits]

    # -- recommendations -------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: Mapping | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> Results:
        """Top-k items for a user from the two-tower model.

        A known user gets their learned vector; an unknown one with `features` (age, gender,
        occupation) the feature-only tower's vector; an unknown one without features the most
        rated items. `features` are used only for users this recommender does not know.
        """
        return self.recommend_batch(
            [user_id],
            k,
            exclude_seen=exclude_seen,
            filter=filter,
            features=None if features is None else [features],
        )[0]

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: Mapping | None = None,
        features: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[Results]:
        k = _check_k(k)
        node = parse_filter(filter) if filter is not None else None
        self._space("two-tower")
        assert self.model is not None
        ids = [str(u) for u in user_ids]
        feats = list(features) if features is not None else [None] * len(ids)
        if len(feats) != len(ids):
            raise ValueError(f"{len(feats)} feature rows for {len(ids)} users")
        seen = self.interactions.seen if self.interactions is not None else {}
        exclude = [seen.get(u, frozenset()) if exclude_seen else frozenset() for u in ids]
        vectors: dict[int, np.ndarray] = {}
        sources: dict[int, str] = {}
        new_rows: list[tuple[int, dict[str, Any]]] = []
        for n, (uid, f) in enumerate(zip(ids, feats, strict=True)):
            if uid in self._user_vectors:
                vectors[n], sources[n] = self._user_vectors[uid], "two-tower"
            elif f is not None:
                new_rows.append((n, {**f, "user_id": uid}))
        if new_rows:
            computed = self.model.user_vectors(pd.DataFrame([row for _, row in new_rows]))
            for (n, _), vec in zip(new_rows, computed, strict=True):
                vectors[n], sources[n] = vec, "features"
        out: list[Results | None] = [None] * len(ids)
        if vectors:
            order = sorted(vectors)
            matrix = np.array([vectors[n] for n in order], dtype=np.float32)
            hits = self._search("two-tower", matrix, k, filter, [exclude[n] for n in order])
            for n, h in zip(order, hits, strict=True):
                out[n] = Results(h, sources[n])
        for n in range(len(ids)):
            if out[n] is None:
                out[n] = Results(self._popular(k, node, exclude[n]), "popularity")
        return out  # type: ignore[return-value]

    def _popular(self, k: int, node: Node | None, exclude: Iterable[str]) -> Hits:
        """The most rated items that match the filter, scored by their rating counts."""
        if self.interactions is None:
            raise SpaceNotConfigured(
                "unknown user and no user data to rank popular items: configure [users], "
                "or send the new user's features"
            )
        fo = self._space("two-tower")
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


def _failover(space: str, cfg: SpaceConfig) -> Failover:
    return Failover(
        space,
        open_store(cfg.uri),
        open_store(cfg.replica) if cfg.replica else None,
        timeout_s=cfg.timeout_s,
        cooldown_s=cfg.cooldown_s,
    )
