"""Every page under Streamlit's AppTest: its widgets, a query that returns results, and a bad
filter or a failing store shown as a message rather than a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the web app needs the `ui` extra")
from streamlit.testing.v1 import AppTest

import embedrec.ui.app
from embedrec.retrieval.config import load_serve_config
from embedrec.ui.users import UserData, user_feature_inputs
from tests.ui.conftest import UIFiles

APP = str(Path(embedrec.ui.app.__file__))
TIMEOUT_S = 120
BAD_FILTER = '{"year": {"$between": [1990, 2000]}}'


def open_page(page: str = "", **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    if page:
        at.query_params["page"] = page
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def by_key(widgets, key: str):  # type: ignore[no-untyped-def]
    return next(w for w in widgets if w.key == key)


def test_recommend_page(app_env: UIFiles) -> None:
    at = open_page()
    assert at.title[0].value == "Recommend"
    assert [r.label for r in at.sidebar.radio] == ["Page"]
    user = by_key(at.selectbox, "rec-user")
    user.set_value(app_env.user_id).run()
    assert not errors(at)
    tables = at.dataframe
    assert len(tables) == 2, "the user's highest-rated items beside the recommendations"
    history, recommended = (t.value for t in tables)
    assert len(history) == 10 and "rating" in history.columns
    assert history["rating"].is_monotonic_decreasing
    assert len(recommended) == 10 and not set(recommended["id"]) & set(history["item_id"])
    assert "answered by **two-tower** · store: **primary**" in captions(at)

    by_key(at.slider, "rec-k").set_value(3).run()
    assert len(at.dataframe[1].value) == 3

    genres = by_key(at.multiselect, "rec-f-genres")
    wanted = genres.options[0]
    genres.set_value([wanted]).run()
    recommended = at.dataframe[1].value
    assert len(recommended) and all(wanted in g for g in recommended["genres"])
    years = by_key(at.slider, "rec-f-year")
    low, high = years.value
    years.set_value((low, low + (high - low) // 2)).run()
    assert all(y <= low + (high - low) // 2 for y in at.dataframe[1].value["year"])


def test_recommend_new_user_from_features(app_env: UIFiles) -> None:
    at = open_page()
    by_key(at.radio, "rec-mode").set_value("A new user (features only)").run()
    config = load_serve_config(app_env.config)
    assert config.two_tower is not None and config.users is not None
    users = UserData.from_config(config.users).users
    declared = [f.name for f in user_feature_inputs(users, config.two_tower.model)]
    shown = [w.key for w in (*at.number_input, *at.selectbox, *at.multiselect, *at.text_input)]
    assert [k.removeprefix("rec-new-") for k in shown if k.startswith("rec-new-")] == declared
    assert not errors(at)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 10
    source = "features" if declared else "popularity"
    assert f"answered by **{source}**" in captions(at)


def test_recommend_bad_filter_is_a_message(app_env: UIFiles) -> None:
    at = open_page()
    by_key(at.text_area, "rec-json").set_value(BAD_FILTER).run()
    assert not at.exception
    assert any("$between" in e for e in errors(at)), errors(at)
    by_key(at.text_area, "rec-json").set_value("{not json").run()
    assert any("not valid JSON" in e for e in errors(at))


def test_similar_page_side_by_side(app_env: UIFiles) -> None:
    at = open_page("similar")
    assert at.title[0].value == "Similar items"
    assert [s.value for s in at.subheader] == ["text", "two-tower"]
    assert len(at.dataframe) == 2
    for table in at.dataframe:
        assert len(table.value) == 10 and app_env.item_id not in set(table.value["id"])
    assert captions(at).count("store: **primary**") == 2

    by_key(at.radio, "sim-space").set_value("image").run()
    assert [s.value for s in at.subheader] == ["image"]
    assert len(at.image) > 10, "thumbnails of the neighbours"

    by_key(at.text_area, "sim-json").set_value(BAD_FILTER).run()
    assert any("$between" in e for e in errors(at))


def test_search_page_text_and_catalog_image(app_env: UIFiles) -> None:
    at = open_page("search", q="space adventure")
    assert at.title[0].value == "Search"
    assert [s.value for s in at.subheader] == ["Text", "Image"]
    assert not errors(at)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 10
    text = captions(at)
    assert "answered by **text**" in text and "answered by **image**" in text
    assert len(at.image) >= 10, "the query image and the result thumbnails"

    by_key(at.text_area, "search-image-json").set_value(BAD_FILTER).run()
    assert any("$between" in e for e in errors(at))


def test_stores_page(app_env: UIFiles) -> None:
    at = open_page("stores")
    assert at.title[0].value == "Stores"
    assert not errors(at)
    assert by_key(at.selectbox, "bench-dataset").value == "synthetic-1k"
    stores = by_key(at.multiselect, "bench-stores")
    assert stores.value == ["faiss-hnsw32", "qdrant-edge"]
    assert len(at.get("vega_lite_chart")) == 2
    assert set(at.dataframe[0].value["store"]) == {"faiss-hnsw32", "qdrant-edge"}
    assert "read " in captions(at)
    stores.set_value(["qdrant-edge"]).run()
    assert set(at.dataframe[0].value["store"]) == {"qdrant-edge"}


def test_quality_page(app_env: UIFiles) -> None:
    at = open_page("quality")
    assert at.title[0].value == "Quality"
    assert not errors(at)
    board, cold = (t.value for t in at.dataframe)
    assert board["model"].tolist() == ["two-tower", "most-popular"]
    assert "recall@10" in cold.columns and len(cold) == 2
    assert [s.value for s in at.subheader] == ["Cold start"]


def test_result_pages_without_results_say_what_to_run(
    app_env: UIFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDREC_UI_RESULTS", str(tmp_path))
    assert "embedrec bench" in open_page("stores").info[0].value
    (tmp_path / "leaderboard.json").write_text("[1, 2]")
    at = open_page("quality")
    assert any("expected a JSON object" in e for e in errors(at))


def test_recommend_from_a_clicked_history(app_env: UIFiles) -> None:
    at = open_page()
    by_key(at.radio, "rec-mode").set_value("A history (click items)").run()
    assert not errors(at)
    assert "answered by **popularity**" in captions(at), "no history yet: a new user"
    by_key(at.button, "rec-add").click().run()
    assert "History, oldest first:" in captions(at)
    assert "answered by **history**" in captions(at)
    first = list(at.dataframe[0].value["id"])
    clicks = [b for b in at.button if b.key.startswith("rec-click-")]
    assert len(clicks) == len(first)
    clicks[0].click().run()
    assert not errors(at)
    assert " → " in captions(at), "the clicked item joins the history"
    second = list(at.dataframe[0].value["id"])
    assert second != first and clicks[0].key.removeprefix("rec-click-") not in second
    by_key(at.button, "rec-clear").click().run()
    assert "answered by **popularity**" in captions(at)
