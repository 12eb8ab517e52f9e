"""A FAISS manifest checked against the index file it describes, and index kinds that FAISS
itself would reject (or abort the process on) refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedrec import CorruptStore, open_store
from embedrec.stores import ConfigError


def saved(tmp_path: Path, kind: str, n: int, dim: int = 16) -> Path:
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index={kind}&metric=cosine", dim=dim)
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    store.upsert([str(i) for i in range(n)], vectors, [{"g": i % 3} for i in range(n)])
    store.close()
    return path


def say(path: Path, **fields: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, **fields}))


@pytest.mark.parametrize(
    "stored, claimed, holds",
    [
        ("Flat", "HNSW32", "IndexFlatIP"),  # was AttributeError on a filtered search
        ("Flat", "IVF,PQ16", "IndexFlatIP"),  # was FAISS's RuntimeError at open
        ("Flat", "IVF,Flat", "IndexFlatIP"),
        ("Flat", "SQ8", "IndexFlatIP"),  # was served as if it were SQ8
        ("HNSW32", "Flat", "IndexHNSWFlat (M=32"),
        ("HNSW32", "HNSW16", "IndexHNSWFlat (M=32"),
        ("IVF,Flat", "IVF,PQ16", "IndexIVFFlat (nlist="),
        ("IVF,Flat", "IVF7,Flat", "IndexIVFFlat (nlist="),
    ],
)
def test_a_manifest_that_misnames_its_index_is_corrupt(tmp_path, stored, claimed, holds):
    path = saved(tmp_path, stored, 600)
    say(path, index=claimed)
    with pytest.raises(CorruptStore) as raised:
        store = open_store(f"faiss:{path}")
        store.search(np.ones((2, 16), np.float32), 5, filter={"g": 1})
    message = str(raised.value)
    assert f"the manifest says {claimed}" in message and holds in message, message


def test_the_metric_and_dim_disagreeing_are_named(tmp_path):
    path = saved(tmp_path, "Flat", 10)
    say(path, metric="l2")
    with pytest.raises(CorruptStore, match=r"says Flat \(16-d, l2\) but .* IndexFlatIP \(16-d"):
        open_store(f"faiss:{path}")


def test_an_untrained_store_is_a_flat_staging_index(tmp_path):
    """Below min_train an IVF store holds a flat index: that agrees with its manifest, and a
    manifest that calls it trained does not."""
    path = saved(tmp_path, "IVF,Flat", 20)
    assert open_store(f"faiss:{path}").count() == 20
    say(path, built=True)
    with pytest.raises(CorruptStore, match=r"IVF,Flat .* holds IndexFlatIP"):
        open_store(f"faiss:{path}")


def test_a_manifest_kind_the_dimension_cannot_hold_is_corrupt(tmp_path):
    path = saved(tmp_path, "IVF,PQ4", 20, dim=12)
    say(path, index="IVF,PQ5")
    with pytest.raises(CorruptStore, match="PQ5 needs a dimension divisible by 5"):
        open_store(f"faiss:{path}")


@pytest.mark.parametrize(
    "kind, match",
    [
        ("HNSW1", "HNSW M 1 is outside 2..512"),  # FAISS aborts the process on M=1
        ("IVF0,Flat", "nlist 0"),
        ("IVF,PQ0", "PQ m 0"),  # was ZeroDivisionError
        ("IVF,PQ16x0", "PQ bits 0"),  # FAISS aborts
        ("IVF,PQ16x17", "PQ bits 17"),
    ],
)
def test_kinds_faiss_cannot_build_are_config_errors(kind, match):
    with pytest.raises(ConfigError, match=match):
        open_store(f"faiss:?index={kind}", dim=64)


def test_an_nlist_above_the_data_keeps_the_store_flat_until_there_are_enough():
    """k-means needs a point per list: FAISS raised its RuntimeError when flush trained
    IVF1000 on 500 vectors."""
    store = open_store("faiss:?index=IVF1000,Flat", dim=8)
    vectors = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
    store.upsert([str(i) for i in range(500)], vectors[:500])
    store.flush()
    assert not store.built and len(store.search(vectors[:1], 5)[0]) == 5
    store.upsert([str(i) for i in range(500, 1000)], vectors[500:])
    store.flush()
    assert store.built
