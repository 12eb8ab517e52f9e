"""Recommendation models scored in one harness: most popular, content item-kNN on the item
tower's text feature, BPR matrix factorisation (the two-tower trainer, ids only) and the two-tower
hybrid.

Each model scores (users x catalogue items) exactly with `scores`; models with a vector form
also answer through a vector store with `store_scores`, which leaves -inf where the store
returned nothing, so the quality lost to approximate search shows in the same metrics.
"""

from __future__ import annotations

import abc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.embedders.two_tower import (
    TextFn,
    Towers,
    TwoTowerConfig,
    TwoTowerModel,
    fit_two_tower,
    last_time,
)
from embedrec.stores import open_store


@dataclass
class Catalog:
    """What a model may learn from and what it ranks: user rows, candidate item rows (the
    catalogue, in index order), the training ratings, and every item row (`all_items`, for
    the features of items that were rated in training but are not candidates), and the
    features each tower declares."""

    users: pd.DataFrame
    items: pd.DataFrame
    train: pd.DataFrame
    all_items: pd.DataFrame | None = None
    towers: Towers = field(default_factory=Towers)

    def __post_init__(self) -> None:
        self.users = self.users.reset_index(drop=True)
        self.items = self.items.reset_index(drop=True)
        if self.all_items is None:
            self.all_items = self.items
        self.user_index = pd.Series(np.arange(len(self.users)), index=self.users["user_id"])
        self.item_index = pd.Series(np.arange(len(self.items)), index=self.items["item_id"])

    @classmethod
    def trained_on(
        cls, users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame, towers: Towers
    ) -> Catalog:
        """The harness's catalogue for a training part: the items it has interactions with
        are the candidates (Recommenders' protocol); every item keeps its features."""
        rated = items[items["item_id"].isin(set(train["item_id"]))]
        return cls(users, rated, train, items, towers)

    def rated_items(self) -> pd.DataFrame:
        """Rows of the items that have training ratings."""
        rated = self.all_items["item_id"].isin(set(self.train["item_id"]))
        return self.all_items[rated].reset_index(drop=True)

    def interactions(self, items: pd.DataFrame) -> np.ndarray:
        """Dense 0/1 matrix (users x `items`) of training interactions."""
        index = pd.Series(np.arange(len(items)), index=items["item_id"])
        rows = self.train[self.train["user_id"].isin(self.user_index.index)]
        rows = rows[rows["item_id"].isin(index.index)]
        r = np.zeros((len(self.users), len(items)), dtype=np.float32)
        r[self.user_index.loc[rows["user_id"]].to_numpy(), index.loc[rows["item_id"]]] = 1.0
        return r


StoreFactory = Callable[[int], object]
"""Opens an empty store of the given dimension with the dot metric (a VectorStore)."""


class Model(abc.ABC):
    name: str
    store_based: bool = True

    @abc.abstractmethod
    def fit(self, catalog: Catalog) -> None: ...

    @abc.abstractmethod
    def scores(self, users: np.ndarray) -> np.ndarray:
        """Exact scores (len(users) x catalogue items); higher is better."""

    def store_scores(
        self, users: np.ndarray, open_store: StoreFactory, depth: np.ndarray
    ) -> np.ndarray:
        """Scores through a store: user u's row holds the scores of the `depth[u]` items the
        store returned for it and -inf elsewhere."""
        raise NotImplementedError(f"{self.name} has no vector form")


def _search_into(
    store, queries: np.ndarray, depth: np.ndarray, n_items: int, index: pd.Series
) -> np.ndarray:
    """Search each query for depth[q] hits (grouped into power-of-two batches, so no query
    over-fetches more than twice what it needs) and scatter the scores into a dense matrix."""
    out = np.full((len(queries), n_items), -np.inf, dtype=np.float32)
    depth = np.minimum(depth, n_items)
    bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(depth, 1))).astype(int), n_items)
    for k in np.unique(bucket):
        rows = np.flatnonzero(bucket == k)
        for row, hits in zip(rows, store.search(queries[rows], int(k)), strict=True):
            out[row, index.loc[hits.ids].to_numpy()] = hits.scores
    return out


class DotModel(Model):
    """A model whose score is the dot product of a user vector and an item vector."""

    user_vecs: np.ndarray
    item_vecs: np.ndarray

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_vecs[users] @ self.item_vecs.T

    def store_scores(
        self, users: np.ndarray, open_store: StoreFactory, depth: np.ndarray
    ) -> np.ndarray:
        store = open_store(self.item_vecs.shape[1])
        try:
            store.upsert(self.item_ids, self.item_vecs)
            store.flush()
            return _search_into(
                store, self.user_vecs[users], depth, len(self.item_ids), self.item_index
            )
        finally:
            store.close()

    def _set_items(self, catalog: Catalog) -> None:
        self.item_ids = catalog.items["item_id"].astype(str).tolist()
        self.item_index = pd.Series(np.arange(len(self.item_ids)), index=self.item_ids)


class MostPopular(Model):
    """Items ranked by their number of training interactions, the same list for everyone."""

    name = "most popular"
    store_based = False

    def fit(self, catalog: Catalog) -> None:
        counts = catalog.train["item_id"].value_counts()
        self.popularity = catalog.items["item_id"].map(counts).fillna(0).to_numpy(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity))).copy()


def _groups(catalog: Catalog, items: pd.DataFrame) -> list[list[str]]:
    groups = catalog.towers.item.groups(items)
    if groups is None:
        raise ValueError("group popularity needs a categorical or multi item feature")
    return groups


class GroupPopularity(Model):
    """For items without interactions (cold start): an item scores the mean training
    popularity of the items that share its groups (the values of the item tower's first
    categorical or multi feature); the only popularity a new item has."""

    name = "most popular (by group)"
    store_based = False

    def fit(self, catalog: Catalog) -> None:
        counts = catalog.train["item_id"].value_counts()
        rated = catalog.rated_items()
        per_item = rated.assign(n=rated["item_id"].map(counts), _g=_groups(catalog, rated))
        by_group = per_item.explode("_g").groupby("_g")["n"].mean()
        self.item_scores = np.array(
            [
                by_group.reindex(g).fillna(0).mean() if len(g) else 0.0
                for g in _groups(catalog, catalog.items)
            ],
            dtype=np.float32,
        )

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(users), len(self.item_scores))).copy()


def _texts(catalog: Catalog, items: pd.DataFrame) -> list[str]:
    texts = catalog.towers.item.texts(items)
    if texts is None:
        raise ValueError("content item-kNN needs a text feature on the item tower")
    return texts


class ContentKNN(Model):
    """Item-kNN on text embeddings (Sarwar et al., WWW 2001, with content
    similarity): score(u, i) = sum of cos(i, j) over the `neighbours` items j nearest to i
    in text space that u interacted with. Through a store, the neighbour lists come from the
    store's search instead of brute force."""

    name = "content item-kNN (text)"

    def __init__(self, text_fn: TextFn, neighbours: int = 50) -> None:
        self.text_fn = text_fn
        self.neighbours = neighbours

    def fit(self, catalog: Catalog) -> None:
        # neighbours come from the items with training ratings (for warm items, the
        # catalogue itself; for new items, the warm ones)
        pool = catalog.rated_items()
        self.r = catalog.interactions(pool)
        self.pool_ids = pool["item_id"].astype(str).tolist()
        self.pool_index = pd.Series(np.arange(len(self.pool_ids)), index=self.pool_ids)
        self.pool_vecs = np.asarray(self.text_fn(_texts(catalog, pool)), np.float32)
        self.cand_vecs = np.asarray(self.text_fn(_texts(catalog, catalog.items)), np.float32)
        self.cand_ids = catalog.items["item_id"].astype(str).tolist()

    def _neighbour_scores(self, sims: np.ndarray) -> np.ndarray:
        """Keep each candidate's top `neighbours` similarities (not itself); zero the rest."""
        sims = sims.copy()
        same = np.equal.outer(np.array(self.cand_ids), np.array(self.pool_ids))
        sims[same] = -np.inf
        k = min(self.neighbours, sims.shape[1] - 1)
        cut = np.partition(sims, -k, axis=1)[:, -k][:, None]
        return np.where(sims >= cut, sims, 0.0).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        w = self._neighbour_scores(self.cand_vecs @ self.pool_vecs.T)
        return self.r[users] @ w.T

    def store_scores(
        self, users: np.ndarray, open_store: StoreFactory, depth: np.ndarray
    ) -> np.ndarray:
        store = open_store(self.pool_vecs.shape[1])
        try:
            store.upsert(self.pool_ids, self.pool_vecs)
            store.flush()
            want = np.full(len(self.cand_ids), self.neighbours + 1)
            sims = _search_into(store, self.cand_vecs, want, len(self.pool_ids), self.pool_index)
        finally:
            store.close()
        w = self._neighbour_scores(np.where(np.isfinite(sims), sims, -1e9))
        w[~np.isfinite(sims)] = 0.0
        return self.r[users] @ w.T


class TwoTower(DotModel):
    """The two-tower hybrid (or, with ids only and the BPR loss, matrix factorisation)."""

    def __init__(
        self,
        name: str,
        config: TwoTowerConfig,
        text_fn: TextFn | None = None,
        progress: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.text_fn = text_fn
        self.progress = progress
        self.model: TwoTowerModel | None = None
        self.train_seconds = 0.0

    def fit(self, catalog: Catalog) -> None:
        started = time.perf_counter()
        self.model = fit_two_tower(
            catalog.train,
            catalog.users,
            catalog.all_items,
            self.config,
            towers=catalog.towers,
            text_fn=self.text_fn,
            progress=self.progress,
        )
        self.train_seconds = time.perf_counter() - started
        # the sequence encoder reads each user's training interactions, queried at the last
        # of them (the cut of a temporal split; no test event's time); the static one, ids
        self.user_vecs = self.model.user_vectors(
            catalog.users,
            history=catalog.train,
            items=catalog.all_items,
            now=last_time(catalog.train),
        )
        self.item_vecs = self.model.item_vectors(catalog.items)
        self._set_items(catalog)


def store_factory(uri: str) -> tuple[StoreFactory, tempfile.TemporaryDirectory]:
    """A factory opening a fresh store for `uri` per call. An empty path means memory for
    FAISS; for other schemes it gets a new folder under a temporary directory (cleaned up
    with the returned handle)."""
    tmp = tempfile.TemporaryDirectory(prefix="embedrec-eval-")
    count = [0]
    scheme, _, rest = uri.partition(":")
    path, _, query = rest.partition("?")

    def factory(dim: int):
        count[0] += 1
        where = path
        if not where and scheme != "faiss":
            where = str(Path(tmp.name) / f"store{count[0]}")
        return open_store(
            f"{scheme}:{where}" + (f"?{query}" if query else ""), dim=dim, metric="dot"
        )

    return factory, tmp
