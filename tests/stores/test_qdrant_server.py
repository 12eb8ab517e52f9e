"""A real Qdrant server: the conformance suite, payload indexes, a sharded collection, gRPC,
the unavailable-server error, and an ingest that survives the server stopping mid-way.

The server is `QDRANT_URL` when set (gRPC on `QDRANT_GRPC_PORT`, default 6334), else a
testcontainers Qdrant of the image docker-compose.yml pins. Without either, every test here
is skipped with the reason (`pytest -rs` prints it).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from embedrec import StoreUnavailable, matches, open_store
from tests.stores.conformance import StoreConformance, brute_force, random_metadata
from tests.stores.recall_conformance import RecallConformance

pytestmark = pytest.mark.docker

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
PREFIX = "embedrec_test_"


def pinned_image() -> str:
    found = re.search(r"image:\s*(qdrant/qdrant:\S+)", COMPOSE.read_text())
    assert found, f"no qdrant image in {COMPOSE}"
    return found.group(1)


@dataclass
class Server:
    host: str
    port: int
    grpc_port: int
    container: Any = None

    def uri(self, collection: str, **options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"qdrant://{self.host}:{self.port}/{collection}" + (f"?{query}" if query else "")

    def refresh_ports(self) -> None:
        """A restarted container may be published on other host ports."""
        self.port = int(self.container.get_exposed_port(6333))
        self.grpc_port = int(self.container.get_exposed_port(6334))

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"http://{self.host}:{self.port}/readyz", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Qdrant at {self.host}:{self.port} not ready in {seconds} s")
            time.sleep(0.5)


def _drop_test_collections(server: Server) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(
        host=server.host, port=server.port, api_key=os.environ.get("QDRANT_API_KEY") or None
    )
    for c in client.get_collections().collections:
        if c.name.startswith(PREFIX):
            client.delete_collection(c.name)
    client.close()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    url = os.environ.get("QDRANT_URL")
    if url:
        parts = urlsplit(url)
        grpc_port = int(os.environ.get("QDRANT_GRPC_PORT", "6334"))
        found = Server(parts.hostname or "localhost", parts.port or 6333, grpc_port)
        yield found
        _drop_test_collections(found)
        return
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers and QDRANT_URL is not set: {exc}")
    from testcontainers.community.qdrant import QdrantContainer

    with QdrantContainer(image=pinned_image()) as container:
        found = Server(container.get_container_host_ip(), 0, 0, container)
        found.refresh_ports()
        found.wait_ready()
        yield found


def collection_for(location: Path) -> str:
    return PREFIX + hashlib.sha1(str(location).encode()).hexdigest()[:16]


class TestQdrantServer(RecallConformance, StoreConformance):
    @pytest.fixture(autouse=True)
    def _server(self, server: Server) -> None:
        self.server = server

    def uri(self, location: Path) -> str:
        return self.server.uri(collection_for(location))


class TestQdrantServerGrpc(StoreConformance):
    filter_examples = 20

    @pytest.fixture(autouse=True)
    def _server(self, server: Server) -> None:
        self.server = server

    def uri(self, location: Path) -> str:
        return self.server.uri(collection_for(location), grpc=1, grpc_port=self.server.grpc_port)


def test_payload_indexes_declared_and_created_on_first_filter(server, tmp_path):
    rng = np.random.default_rng(0)
    metadata = random_metadata(rng, 300)
    uri = server.uri(collection_for(tmp_path), indexes="genre,tags")
    with open_store(uri, dim=8) as store:
        store.upsert([f"r{i}" for i in range(300)], rng.standard_normal((300, 8)), metadata)
        schema = store.engine.client.get_collection(store.engine.collection).payload_schema
        assert {k: v.data_type.value for k, v in schema.items()} == {
            "genre": "keyword",
            "tags": "keyword",
        }
        flt = {"year": {"$gte": 2000}, "in_stock": True}
        assert store.count(flt) == sum(matches(m, flt) for m in metadata)
        schema = store.engine.client.get_collection(store.engine.collection).payload_schema
        assert schema["year"].data_type.value == "float"
        assert schema["in_stock"].data_type.value == "bool"
        assert schema["year"].points == sum("year" in m for m in metadata)
    with open_store(uri) as again:  # indexes survive, none is created twice
        assert again.indexed == {"genre", "tags", "year", "in_stock"}
        assert again.pending_indexes == []


def test_sharded_collection(server, tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((500, 16)).astype(np.float32)
    metadata = random_metadata(rng, 500)
    uri = server.uri(collection_for(tmp_path), shard_number=2, m=8, ef_construct=64)
    with open_store(uri, dim=16, metric="l2") as store:
        info = store.engine.client.get_collection(store.engine.collection)
        assert info.config.params.shard_number == 2
        assert info.config.hnsw_config.m == 8
        store.upsert([str(i) for i in range(500)], base, metadata)
        assert store.count() == 500
        queries = base[:5] + 0.01
        truth = np.argsort(-brute_force(base, queries, "l2"), axis=1)[:, :10]
        hits = store.search(queries, 10, params={"exact": True})
        assert [[int(h.id) for h in q] for q in hits] == truth.tolist()
        flt = {"genre": {"$in": ["Drama", "Comedy"]}}
        assert store.count(flt) == sum(matches(m, flt) for m in metadata)


def test_unavailable_server_is_named_within_the_timeout(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{closed}"):
        open_store(f"qdrant://127.0.0.1:{closed}/{PREFIX}x?timeout=2", dim=4)
    assert time.monotonic() - start < 5
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{closed} \\(gRPC port {closed}\\)"):
        open_store(f"qdrant://127.0.0.1:{closed}/{PREFIX}x?grpc=1&grpc_port={closed}", dim=4)


def test_ingest_resumes_after_the_server_stops_mid_way(server, tmp_path, monkeypatch):
    if server.container is None:
        pytest.skip("QDRANT_URL names a server this test may not stop; needs testcontainers")
    from embedrec.embedders import get_embedder
    from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
    from embedrec.ingestion.pipeline import ingest
    from embedrec.ingestion.sources import Source
    from embedrec.ingestion.summary import IngestOptions

    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    catalog = tmp_path / "items.csv"
    lines = ["item_id,title,year"] + [f"m{i},Movie {i},{1950 + i % 70}" for i in range(600)]
    catalog.write_text("\n".join(lines) + "\n")
    columns = ColumnMap(
        id="item_id", text="{title}", metadata=parse_metadata_spec("title,year:int")
    )
    source = Source(catalog, columns)
    manifest = tmp_path / "manifest.sqlite"
    options = IngestOptions(batch_size=50, checkpoint_seconds=0)
    collection = collection_for(tmp_path)
    read = 0
    embedder = get_embedder("text")

    def stop_after_200(n: int) -> None:
        nonlocal read
        read += n
        if read == 200:
            server.container.get_wrapped_container().stop(timeout=10)

    with pytest.raises(StoreUnavailable):
        ingest(
            source,
            server.uri(collection, timeout=3),
            options=options,
            embedder=embedder,
            progress=stop_after_200,
            manifest=manifest,
        )
    server.container.get_wrapped_container().start()
    server.refresh_ports()
    server.wait_ready()
    resumed = ingest(
        source,
        server.uri(collection),
        options=options,
        embedder=embedder,
        manifest=manifest,
    )
    assert resumed.unchanged >= 200 and resumed.unchanged + resumed.upserted == 600
    with open_store(server.uri(collection)) as store:
        assert store.count() == 600
        ids = [f"m{i}" for i in range(600)]
        assert [r.id for r in store.fetch(ids)] == ids
        assert store.fetch(["m599"])[0].metadata == {"title": "Movie 599", "year": 1950 + 599 % 70}
