"""Small real data for the retrieval tests, built once per session.

300 MovieLens items with real all-MiniLM-L6-v2 title vectors (through the embedding cache),
a two-tower model trained for two epochs on the ratings of 100 users, and 40 Fashion-MNIST
images embedded by EfficientNet-Lite0 at 32 px. Fault injectors wrap real stores.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from embedrec import StoreUnavailable, VectorStore, open_store
from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.data.movielens import load_movielens
from embedrec.embedders import Embedder, EmbeddingCache, embed_cached, get_embedder
from embedrec.embedders.two_tower import TwoTowerConfig, TwoTowerModel, fit_two_tower
from embedrec.eval.models.config import load_experiment_config
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.failover import Failover
from embedrec.retrieval.users import Interactions
from embedrec.stores.errors import ConfigError

N_ITEMS = 300
N_USERS = 100
N_IMAGES = 40
IMAGE_SIZE = 32


def movie_text(row: Any) -> str:
    year = "" if pd.isna(row.year) else f" ({int(row.year)})"
    return f"{row.title}{year}: {', '.join(row.genres)}"


@dataclass
class Data:
    item_ids: list[str]
    item_meta: list[dict[str, Any]]
    text_vectors: np.ndarray
    text_embedder: Embedder
    model: TwoTowerModel
    item_vectors: np.ndarray
    users: pd.DataFrame
    ratings: pd.DataFrame
    image_ids: list[str]
    image_meta: list[dict[str, Any]]
    images: np.ndarray
    image_vectors: np.ndarray
    image_embedder: Embedder


@pytest.fixture(scope="session")
def data() -> Data:
    ml = load_movielens()
    items = ml.items.head(N_ITEMS).reset_index(drop=True)
    meta = []
    for row in items.itertuples():
        m: dict[str, Any] = {"title": row.title, "genres": list(row.genres)}
        if not pd.isna(row.year):
            m["year"] = int(row.year)
        meta.append(m)
    text_embedder = get_embedder("text", device="cpu")
    texts = [movie_text(row) for row in items.itertuples()]
    text_vectors = embed_cached(text_embedder, texts, EmbeddingCache())[0]
    users = ml.users[ml.users["user_id"].astype(int) <= N_USERS].reset_index(drop=True)
    ratings = ml.ratings[ml.ratings["user_id"].isin(set(users["user_id"]))]
    config = TwoTowerConfig(
        dim=16, hidden=32, text=False, epochs=2, batch_size=1024, val_fraction=0.0, device="cpu"
    )
    towers = load_experiment_config(
        Path(__file__).parents[2] / "configs" / "two_tower.toml"
    ).data.towers()
    model = fit_two_tower(ratings, users, ml.items, config, towers=towers, progress=False)
    fm = load_fashion_mnist()
    images = fm.train_images[:N_IMAGES]
    image_embedder = get_embedder("image", device="cpu", image_size=IMAGE_SIZE)
    return Data(
        item_ids=items["item_id"].tolist(),
        item_meta=meta,
        text_vectors=text_vectors,
        text_embedder=text_embedder,
        model=model,
        item_vectors=model.item_vectors(items),
        users=users,
        ratings=ratings,
        image_ids=fm.product_ids("train")[:N_IMAGES],
        image_meta=[{"category": fm.classes[int(c)]} for c in fm.train_labels[:N_IMAGES]],
        images=images,
        image_vectors=image_embedder.embed(list(images)),
        image_embedder=image_embedder,
    )


def build_store(
    uri: str, ids: Sequence[str], vectors: np.ndarray, meta: Sequence[dict]
) -> VectorStore:
    store = open_store(uri, dim=vectors.shape[1], metric="cosine")
    store.upsert(list(ids), vectors, list(meta))
    store.flush()
    return store


def store_uri(backend: str, folder: Path) -> str:
    return f"faiss:{folder}?index=Flat" if backend == "faiss" else f"qdrant+edge:{folder}"


def backend_param(backend: str) -> Any:
    """A pytest param for a store backend, skipped with the reason where it cannot run."""
    if backend == "qdrant+edge":
        try:
            import embedrec.stores.qdrant.edge_engine  # noqa: F401
        except ImportError as exc:
            return pytest.param(backend, marks=pytest.mark.skip(reason=f"qdrant+edge: {exc}"))
    return pytest.param(backend)


def make_recommender(
    data: Data,
    root: Path,
    backend: str = "faiss",
    *,
    two_tower: Failover | None = None,
) -> Recommender:
    """Text, image and two-tower spaces over fresh stores of `backend` under `root`."""
    text = build_store(
        store_uri(backend, root / "text"), data.item_ids, data.text_vectors, data.item_meta
    )
    image = build_store(
        store_uri(backend, root / "image"), data.image_ids, data.image_vectors, data.image_meta
    )
    if two_tower is None:
        tt = build_store(
            store_uri(backend, root / "tt"), data.item_ids, data.item_vectors, data.item_meta
        )
        two_tower = Failover("two-tower", tt)
    return Recommender(
        text=Failover("text", text),
        image=Failover("image", image),
        two_tower=two_tower,
        text_embedder=data.text_embedder,
        image_embedder=data.image_embedder,
        model=data.model,
        interactions=Interactions.from_frames(data.users, data.ratings),
    )


class FaultyStore(VectorStore):
    """A fault injector around a real store: the first `healthy_calls` calls pass through,
    every later one raises `StoreUnavailable`; with `delay_s`, every call sleeps first. With
    `remote`, it passes for a network store (one that `Failover` bounds with its timeout)."""

    def __init__(
        self,
        inner: VectorStore,
        healthy_calls: int = 0,
        delay_s: float = 0.0,
        *,
        remote: bool = False,
    ):
        self.inner = inner
        self.uri = f"faulty+{inner.uri}"
        self.dim = inner.dim
        self.metric = inner.metric
        self.capabilities = dataclasses.replace(inner.capabilities, remote=remote)
        self.healthy_calls = healthy_calls
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, uri: Any, *, dim: int | None, metric: str | None) -> VectorStore:
        raise ConfigError("a FaultyStore wraps an open store: FaultyStore(store, n)")

    def _tick(self) -> None:
        with self._lock:
            self.calls += 1
            failing = self.calls > self.healthy_calls
        if self.delay_s:
            time.sleep(self.delay_s)
        if failing:
            raise StoreUnavailable(f"{self.uri}: injected failure (call {self.calls})")

    def _upsert(self, batch):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._upsert(batch)

    def _delete_ids(self, ids):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._delete_ids(ids)

    def _delete_filter(self, node):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._delete_filter(node)

    def _fetch(self, ids):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._fetch(ids)

    def _search(self, queries, k, node, params, exclude):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._search(queries, k, node, params, exclude)

    def _count(self, node):  # type: ignore[no-untyped-def]
        self._tick()
        return self.inner._count(node)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run `app` under a real uvicorn on 127.0.0.1 (a free port) in a thread, with the
    protocol `embedrec serve` uses; yields its URL."""
    import uvicorn

    from embedrec.retrieval.api.protocol import OneWriteHttp

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=OneWriteHttp, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def rec(data: Data, tmp_path_factory) -> Iterator[Recommender]:
    """A recommender over fresh FAISS stores, for the service tests of one module."""
    recommender = make_recommender(data, tmp_path_factory.mktemp("api"))
    yield recommender
    recommender.close()


@pytest.fixture(scope="module")
def url(rec: Recommender) -> Iterator[str]:
    """The service over `rec` without an API key, on a real uvicorn."""
    from embedrec.retrieval.api import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMBEDREC_API_KEY", raising=False)
        app = create_app(rec)
    with serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Any]:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def sequence_model(data: Data) -> TwoTowerModel:
    config_file = Path(__file__).parents[2] / "configs" / "two_tower.toml"
    towers = load_experiment_config(config_file).data.towers()
    config = TwoTowerConfig(
        user_encoder="sequence", history=20, layers=1, heads=2, dim=16, hidden=32, text=False,
        epochs=2, val_fraction=0.0, device="cpu",
    )  # fmt: skip
    items = load_movielens().items
    return fit_two_tower(data.ratings, data.users, items, config, towers=towers, progress=False)


def sequence_recommender(data: Data, model: TwoTowerModel, root: Path, **kw) -> Recommender:
    items = load_movielens().items.head(len(data.item_ids))
    store = build_store(
        f"faiss:{root}?index=Flat", data.item_ids, model.item_vectors(items), data.item_meta
    )
    interactions = Interactions.from_frames(data.users, data.ratings)
    return Recommender(
        two_tower=Failover("two-tower", store), model=model, interactions=interactions, **kw
    )


@pytest.fixture(scope="session")
def seq_rec(data: Data, sequence_model: TwoTowerModel, tmp_path_factory) -> Iterator[Recommender]:
    rec = sequence_recommender(data, sequence_model, tmp_path_factory.mktemp("seq"))
    yield rec
    rec.close()
