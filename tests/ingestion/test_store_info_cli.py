"""A store built by `embedrec ingest` carries its embedder: it can be queried from a shell
whose EMBEDREC_CACHE is empty, and (FAISS, Qdrant Edge) from a copy of its folder elsewhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedrec.cli import main
from embedrec.embedders import get_embedder
from embedrec.stores import open_store
from embedrec.testing.pinecone_loopback import LoopbackPinecone
from tests.ingestion.test_ingest_cli import MOVIES, TEXT_FLAGS, write_catalog

ON_CPU = ["--embedder", "text?device=cpu"]


@pytest.fixture(scope="module")
def pinecone() -> Iterator[LoopbackPinecone]:
    server = LoopbackPinecone()
    yield server
    server.close()
    assert server.violations == []


@pytest.fixture(autouse=True)
def loopback_env(pinecone: LoopbackPinecone, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", pinecone.url)
    monkeypatch.setenv("PINECONE_HOST", "")


def ingest(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "ingest-cache"))
    path = write_catalog(tmp_path / "items.csv", MOVIES)
    assert main(["ingest", "--source", str(path), "--store", uri, *TEXT_FLAGS, *ON_CPU]) == 0


def top_hit(uri: str, capsys: pytest.CaptureFixture, *extra: str) -> str:
    capsys.readouterr()
    assert main(["query", "--store", uri, "--text", "The Matrix", "--k", "1", *extra]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("scheme", ["faiss", "qdrant+edge"])
def test_a_local_store_is_queried_with_an_empty_cache_and_from_a_copy(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ingest(tmp_path, f"{scheme}:{tmp_path / 'movies'}", monkeypatch)
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "empty-cache"))
    assert "The Matrix" in top_hit(f"{scheme}:{tmp_path / 'movies'}", capsys)
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(tmp_path / "movies", copy)
    shutil.rmtree(tmp_path / "movies")
    assert "The Matrix" in top_hit(f"{scheme}:{copy}", capsys)
    assert not (tmp_path / "empty-cache" / "stores").exists()


def test_a_pinecone_store_is_queried_with_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    uri = "pinecone://carried?create=1&namespace=films"
    ingest(tmp_path, uri, monkeypatch)
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "empty-cache"))
    assert "The Matrix" in top_hit("pinecone://carried?namespace=films", capsys)
    with open_store("pinecone://carried?namespace=films") as store:
        assert store.count() == len(MOVIES)  # the info record is outside the namespace
        assert store.info is not None and store.info.embedder == "text?device=cpu"
    with open_store("pinecone://carried?namespace=other") as other:
        assert other.info is None and other.count() == 0


def test_an_embedder_other_than_the_stores_is_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    uri = f"faiss:{tmp_path / 'movies'}"
    ingest(tmp_path, uri, monkeypatch)
    # the same model spelled otherwise is the same embedder
    assert "The Matrix" in top_hit(uri, capsys, "--embedder", "text", "--device", "cpu")
    capsys.readouterr()
    rc = main(["query", "--store", uri, "--text", "x", "--embedder", "image"])
    err = capsys.readouterr().err
    assert rc == 2
    image_name = get_embedder("image").name
    assert "'text?device=cpu'" in err and "'image'" in err and image_name in err


def test_a_store_that_does_not_say_needs_an_embedder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with open_store(f"faiss:{tmp_path / 'foreign'}", dim=384) as store:
        store.upsert(["a"], [[1.0] * 384])
    assert main(["query", "--store", f"faiss:{tmp_path / 'foreign'}", "--text", "x"]) == 2
    assert "pass --embedder" in capsys.readouterr().err
    uri = f"faiss:{tmp_path / 'foreign'}"
    assert main(["query", "--store", uri, "--text", "x", "--embedder", "text?device=cpu"]) == 0


def test_the_python_client_takes_the_embedder_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedrec.retrieval.client import Recommender
    from embedrec.retrieval.config import ServeConfig
    from embedrec.stores import EmbedderMismatch

    uri = f"qdrant+edge:{tmp_path / 'movies'}"
    ingest(tmp_path, uri, monkeypatch)
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "empty-cache"))
    rec = Recommender.from_config(ServeConfig.model_validate({"text": {"uri": uri}}))
    try:
        assert rec.text_embedder is not None
        assert rec.text_embedder.name == get_embedder("text").name
    finally:
        rec.close()
    wrong = ServeConfig.model_validate({"text": {"uri": uri, "embedder": "image"}})
    with pytest.raises(EmbedderMismatch, match=r"'text\?device=cpu'.*not 'image'"):
        Recommender.from_config(wrong)
