"""TextEmbedder on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedrec.data.fetching import DatasetUnavailable
from embedrec.data.movielens import load_movielens
from embedrec.embedders import Embedder, get_embedder
from embedrec.embedders.base import InputError
from embedrec.embedders.text import DEFAULT_MODEL, TextEmbedder, default_model


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(device="cpu")


def test_protocol_name_and_dim_without_loading(embedder: TextEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.modality == "text" and embedder.dim == 384
    assert embedder.name.startswith(f"text:{DEFAULT_MODEL}@")
    assert TextEmbedder().name == embedder.name  # stable: a hash of the weights
    assert embedder._st is None  # name and dim come from the files, no model load


def test_vectors_normalised_deterministic_and_meaningful(embedder: TextEmbedder) -> None:
    texts = ["a cat sat on the mat", "a kitten sat on a rug", "quarterly tax filing deadline"]
    v = embedder.embed(texts)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(texts), v, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(texts[2:]), v[2:], atol=1e-5)  # batch-independent
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_empty_and_non_text_items_name_their_position(embedder: TextEmbedder) -> None:
    with pytest.raises(InputError, match="item 1: empty text") as info:
        embedder.embed(["fine", "   ", "fine too"])
    assert info.value.index == 1
    with pytest.raises(InputError, match=r"item 0: expected text \(str\), got int"):
        embedder.embed([42])
    assert embedder.embed([]).shape == (0, 384)


def test_other_models_by_path_or_hub_name() -> None:
    assert TextEmbedder(default_model()).name == TextEmbedder().name
    hub = TextEmbedder("org/some-model", revision="abc123")
    assert hub.name == "text:org/some-model@abc123"
    assert TextEmbedder("org/some-model").name == "text:org/some-model"
    with pytest.raises(ValueError, match="batch_size"):
        TextEmbedder(batch_size=0)


def test_factory() -> None:
    assert isinstance(get_embedder("text"), TextEmbedder)
    emb = get_embedder(f"text:{default_model()}", batch_size=8)
    assert isinstance(emb, TextEmbedder) and emb.batch_size == 8
    hub = get_embedder("text:org/some-model?revision=abc123&batch_size=16")
    assert hub.name == "text:org/some-model@abc123" and hub.batch_size == 16


@pytest.mark.slow
def test_star_wars_finds_its_sequels_in_movielens(embedder: TextEmbedder) -> None:
    try:
        items = load_movielens().items
    except DatasetUnavailable as exc:
        pytest.skip(f"MovieLens-100k unavailable offline and not cached: {exc}")
    texts = [
        f"{r.title} ({r.year}): {', '.join(r.genres)}"
        if not pd.isna(r.year)
        else f"{r.title}: {', '.join(r.genres)}"
        for r in items.itertuples()
    ]
    vectors = embedder.embed(texts)
    query = embedder.embed(["Star Wars"])[0]
    top3 = items["title"].to_numpy()[np.argsort(-(vectors @ query))[:3]].tolist()
    assert {"Return of the Jedi", "Empire Strikes Back, The"} & set(top3), top3
