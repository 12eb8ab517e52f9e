"""The app's two backends: a Recommender in process and a running `embedrec serve`, with
the store that answered (primary or replica) and failures as `QueryError` messages; and the
Recommend page against a service whose store is down."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the web app needs the `ui` extra")
from streamlit.testing.v1 import AppTest

from embedrec.retrieval.api import create_app
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.failover import Failover
from embedrec.ui.backend import InProcess, QueryError, Service
from embedrec.ui.settings import API_ENV
from tests.retrieval.conftest import Data, FaultyStore, build_store, make_recommender, serving
from tests.ui.conftest import UIFiles
from tests.ui.test_pages import APP, TIMEOUT_S, errors

KEY = "ui-test-key"
SPACES = ["text", "image", "two-tower"]


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def _two_tower(data: Data, root: Path, *, replica: bool) -> Failover:
    primary = build_store(
        f"faiss:{root / 'p'}?index=Flat", data.item_ids, data.item_vectors, data.item_meta
    )
    backup = None
    if replica:
        backup = build_store(
            f"faiss:{root / 'r'}?index=Flat", data.item_ids, data.item_vectors, data.item_meta
        )
    return Failover("two-tower", FaultyStore(primary), backup, cooldown_s=60)


@pytest.fixture
def healthy(data: Data, tmp_path: Path) -> Iterator[Recommender]:
    rec = make_recommender(data, tmp_path)
    yield rec
    rec.close()


def test_in_process_answers_with_timing_and_store(healthy: Recommender, data: Data) -> None:
    backend = InProcess(healthy)
    answer = backend.recommend(str(data.users["user_id"][0]), 5, None, None)
    assert len(answer.hits) == 5 and answer.source == "two-tower" and answer.store == "primary"
    assert 0 < answer.seconds < 5
    answer = backend.similar(data.item_ids[0], 4, "text", {"genres": {"$in": ["Drama"]}})
    assert len(answer.hits) == 4 and all("Drama" in h.metadata["genres"] for h in answer.hits)
    with pytest.raises(QueryError, match=r"\$between"):
        backend.search_text("space", 3, {"year": {"$between": [1, 2]}})
    with pytest.raises(QueryError, match="not in the"):
        backend.similar("no-such-item", 3, "text", None)


def test_in_process_store_down_and_replica(data: Data, tmp_path: Path) -> None:
    down = make_recommender(
        data, tmp_path / "a", two_tower=_two_tower(data, tmp_path / "a", replica=False)
    )
    with pytest.raises(QueryError, match=r"faulty.*injected failure"):
        InProcess(down).recommend(str(data.users["user_id"][0]), 5, None, None)
    down.close()
    backed = make_recommender(
        data, tmp_path / "b", two_tower=_two_tower(data, tmp_path / "b", replica=True)
    )
    answer = InProcess(backed).recommend(str(data.users["user_id"][0]), 5, None, None)
    assert len(answer.hits) == 5 and answer.store == "replica"
    backed.close()


def test_service_backend(healthy: Recommender, data: Data, tmp_path: Path) -> None:
    with serving(create_app(healthy, api_key=KEY)) as url:
        backend = Service(url, SPACES, "two-tower", KEY)
        answer = backend.recommend(str(data.users["user_id"][0]), 5, None, None)
        assert len(answer.hits) == 5 and answer.store == "primary" and answer.seconds > 0
        answer = backend.search_image(png(data.images[0]), 3, {"category": {"$ne": "Bag"}})
        assert len(answer.hits) == 3 and answer.source == "image"
        assert all(h.metadata["category"] != "Bag" for h in answer.hits)
        with pytest.raises(QueryError, match=r"400.*\$between"):
            backend.search_text("space", 3, {"year": {"$between": [1, 2]}})
        with pytest.raises(QueryError, match="401"):
            Service(url, SPACES, "two-tower").similar(data.item_ids[0], 3, "text", None)
    with pytest.raises(QueryError, match="did not answer"):
        Service(url, SPACES, "two-tower", KEY)


def test_service_reports_the_replica(data: Data, tmp_path: Path) -> None:
    rec = make_recommender(data, tmp_path, two_tower=_two_tower(data, tmp_path, replica=True))
    with serving(create_app(rec, api_key=KEY)) as url:
        answer = Service(url, SPACES, "two-tower", KEY).recommend(
            str(data.users["user_id"][0]), 5, None, None
        )
    rec.close()
    assert len(answer.hits) == 5 and answer.store == "replica"


def test_recommend_page_over_a_service_whose_store_is_down(
    app_env: UIFiles, data: Data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = make_recommender(data, tmp_path, two_tower=_two_tower(data, tmp_path, replica=False))
    monkeypatch.setenv("EMBEDREC_API_KEY", KEY)
    with serving(create_app(rec, api_key=KEY)) as url:
        monkeypatch.setenv(API_ENV, url)
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        assert not at.exception
        assert any("503" in e and "injected failure" in e for e in errors(at)), errors(at)
        at.query_params["page"] = "similar"
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
        at.query_params["page"] = "similar"
        at.run()
        assert not at.exception
        assert len(at.dataframe) >= 1, "the text space still answers"
    rec.close()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.query_params["page"] = "search"
    at.query_params["q"] = "space"
    at.run()
    assert not at.exception
    assert any("did not answer" in e for e in errors(at)), errors(at)
