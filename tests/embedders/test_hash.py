"""`hash:DIM`, the hashed bag-of-words embedder that benchmarks and tests use as a model that
costs nothing, found through the embedder registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedrec.embedders import InputError, get_embedder
from embedrec.embedders.hash import HashEmbedder
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.rows import Row
from embedrec.ingestion.sources import Source
from embedrec.stores import open_store


def test_the_spec_gives_dim_and_a_name_per_dim() -> None:
    embedder = get_embedder("hash:16")
    assert isinstance(embedder, HashEmbedder)
    assert (embedder.dim, embedder.modality, embedder.name) == (16, "text", "hash-bow-16")
    assert get_embedder("hash").dim == 64
    for bad in ("hash:x", "hash:1", "hash:8?scale=2"):
        with pytest.raises(ValueError, match="hash"):
            get_embedder(bad)


def test_vectors_are_unit_bags_of_words() -> None:
    embedder = get_embedder("hash:32")
    v = embedder.embed(["Toy Story 1995", "story TOY 1995", "Heat", "", "a a"])
    assert v.shape == (5, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(v[0], v[1])  # order and case do not matter
    assert not np.allclose(v[0], v[2])
    with pytest.raises(InputError, match="item 1: expected text"):
        embedder.embed(["ok", b"bytes"])  # type: ignore[list-item]


def test_the_same_text_gives_the_same_vector_in_another_process() -> None:
    code = "from embedrec.embedders import get_embedder as g\n"
    code += "print(g('hash:8').embed(['x y'])[0].tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(get_embedder("hash:8").embed(["x y"])[0].tolist())


def test_prepare_refuses_image_bytes() -> None:
    with pytest.raises(InputError, match="takes text"):
        get_embedder("hash:8").prepare(Row(2, "a", b"\x89PNG", {}))


def test_an_ingest_by_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "items.csv"
    path.write_text("id,title,year\n" + "".join(f"{i},Film {i},{1990 + i}\n" for i in range(30)))
    columns = ColumnMap(id="id", text="{title}", metadata=parse_metadata_spec("year:int"))
    uri = f"faiss:{tmp_path / 'store'}"
    first = ingest(Source(path, columns), uri, "hash:16")
    again = ingest(Source(path, columns), uri, "hash:16")
    assert (first.embedded, first.upserted, again.unchanged, again.embedded) == (30, 30, 30, 0)
    with open_store(uri) as store:
        assert store.count() == 30 and store.dim == 16
