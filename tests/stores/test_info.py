"""StoreInfo's own checks: what a store may be described with, and how a damaged description
reads (the conformance suite checks each store keeps it: info_conformance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedrec.stores import (
    ConfigError,
    CorruptStore,
    EmbedderMismatch,
    StoreInfo,
    open_store,
)
from embedrec.stores.pinecone.store import INFO_NAMESPACE
from embedrec.stores.qdrant.client_engine import INFO_KEY
from embedrec.testing.pinecone_loopback import LoopbackPinecone
from tests.stores.info_conformance import info_for


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"embedder": ""}, "embedder"),
        ({"embedder": "text:https://me:pw@example.com/m"}, "credentials"),
        ({"dim": 0}, "dim"),
        ({"dim": True}, "dim"),
        ({"metric": "hamming"}, "metric"),
        ({"modality": "caf\udce9"}, "Unicode"),
        ({"search_defaults": {"api_key": "x"}}, "secrets"),
        ({"search_defaults": {"ef": [1, 2]}}, "ef"),
        ({"search_defaults": {"recall": float("nan")}}, "recall"),
    ],
)
def test_bad_info_is_refused(changes, reason):
    with pytest.raises(ConfigError, match=reason):
        info_for(**changes)


def test_a_mismatched_embedder_names_both():
    info = info_for()
    info.check_embedder("text", info.embedder_name, "faiss:x")  # another spelling, same model
    with pytest.raises(EmbedderMismatch, match=r"all-MiniLM-L6-v2.*not 'image'.*clip"):
        info.check_embedder("image", "openai/clip@1", "faiss:x")


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: [raw],
        lambda raw: raw | {"format": 2},
        lambda raw: raw | {"dim": "8"},
        lambda raw: raw | {"metric": None},
        lambda raw: raw | {"extra": 1},
        lambda raw: {k: v for k, v in raw.items() if k != "embedder"},
    ],
)
def test_a_damaged_info_is_a_corrupt_store(damage):
    raw = info_for().to_json()
    assert StoreInfo.from_json(raw, "faiss:x") == info_for()
    with pytest.raises(CorruptStore, match="faiss:x"):
        StoreInfo.from_json(damage(raw), "faiss:x")


def _damage_faiss(location: Path, store) -> str:
    manifest = location / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["info"]["dim"] = -1
    manifest.write_text(json.dumps(raw))
    return f"faiss:{location}"


def _damage_edge(location: Path, store) -> str:
    manifest = location / "embedrec.json"
    raw = json.loads(manifest.read_text())
    raw["info"]["metric"] = "hamming"
    manifest.write_text(json.dumps(raw))
    return f"qdrant+edge:{location}"


def _damage_qdrant_local(location: Path, store) -> str:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(location))
    try:
        client.update_collection("movies", metadata={INFO_KEY: '{"format": 1, "dim": 8}'})
    finally:
        client.close()
    return f"qdrant+local:{location}/movies"


@pytest.mark.parametrize(
    "uri, damage",
    [
        ("faiss:{}", _damage_faiss),
        ("qdrant+edge:{}", _damage_edge),
        ("qdrant+local:{}/movies", _damage_qdrant_local),
    ],
)
def test_a_damaged_info_on_disk_is_a_corrupt_store(tmp_path: Path, uri: str, damage) -> None:
    location = tmp_path / "store"
    store = open_store(uri.format(location), dim=8)
    store.set_info(info_for())
    store.close()
    damaged = damage(location, store)
    with pytest.raises(CorruptStore, match="info"), open_store(damaged) as reopened:
        reopened.info  # noqa: B018 (FAISS already refuses at open)


def test_pinecone_keeps_the_info_outside_every_data_namespace(monkeypatch) -> None:
    server = LoopbackPinecone()
    try:
        monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
        monkeypatch.delenv("PINECONE_HOST", raising=False)
        with pytest.raises(ConfigError, match="reserved"):
            open_store(f"pinecone://described?create=1&namespace={INFO_NAMESPACE}", dim=8)
        with open_store("pinecone://described?create=1&namespace=a", dim=8) as store:
            store.upsert(["x"], [[1.0] * 8])
            store.set_info(info_for())
        with open_store("pinecone://described?namespace=a") as store:
            assert store.info == info_for() and store.count() == 1
            assert store.fetch(["x"])[0].id == "x"
        with open_store("pinecone://described") as default:
            assert default.info is None and default.count() == 0
            default.set_info(info_for(embedder="text"))
        index = server.indexes["described"]
        for record in index.namespaces[INFO_NAMESPACE].values():
            record.metadata = {"info": "{not json"}
        store = open_store("pinecone://described?namespace=a")
        with pytest.raises(CorruptStore, match="store info"), store:
            store.info  # noqa: B018
        assert server.violations == []
    finally:
        server.close()
