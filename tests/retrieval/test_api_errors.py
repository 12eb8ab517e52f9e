"""Errors over HTTP in the user's terms (issue 28): one shape for every 4xx (`detail`, one
line; a 422 adds `errors`, one per invalid field), a misspelt filter field named with the
store's fields, an upload that is not an image said so, popularity scores labelled."""

from __future__ import annotations

import httpx
import pytest

from embedrec.retrieval.api import create_app
from tests.retrieval.conftest import serving


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert "\n" not in body["detail"]
    assert set(body) <= {"detail", "errors"}, body
    return body


@pytest.mark.parametrize(
    ("path", "body"),
    [("/similar", {"item_id": "50"}), ("/recommend", {"user_id": "7"}), ("/search", {"text": "a"})],
)
def test_a_misspelt_filter_field_is_400_naming_it_and_the_fields(client, path, body):
    body = {**body, "filter": {"yeer": {"$gte": 1990}}}
    problem = assert_problem(client.post(path, json=body), 400)
    assert "'yeer' is not a field of" in problem["detail"]
    assert "year" in problem["detail"] and "title" in problem["detail"]


def test_every_error_has_one_shape(client, rec):
    assert_problem(client.post("/similar", json={"item_id": "nope"}), 404)
    assert_problem(client.post("/similar", content=b"{}", headers={"content-type": "text/x"}), 415)
    invalid = assert_problem(client.post("/similar", json={"item_id": "1", "k": "10"}), 422)
    assert invalid["detail"].startswith("body.k: ")
    assert invalid["errors"][0]["loc"] == ["body", "k"]
    many = client.post("/similar", json={"k": "1", "space": 3, "filter": 4, "extra": 5})
    assert "more)" in assert_problem(many, 422)["detail"]
    with serving(create_app(rec, api_key="s3cret")) as base, httpx.Client(base_url=base) as c:
        assert_problem(c.post("/similar", json={"item_id": "1"}), 401)
    schema = client.get("/openapi.json").json()
    answers = schema["paths"]["/similar"]["post"]["responses"]
    for code in ("400", "401", "404", "415", "422"):
        ref = answers[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Problem"), (code, ref)


def test_an_upload_that_is_not_an_image_says_so(client):
    text = {"file": ("notes.txt", b"just some text", "image/png")}
    problem = assert_problem(client.post("/search/image", files=text), 400)
    assert "not a format Pillow reads" in problem["detail"]
    assert "BytesIO" not in problem["detail"] and "0x" not in problem["detail"]


def test_popularity_scores_are_labelled(client):
    popular = client.post("/recommend", json={"user_id": "who", "k": 3}).json()
    assert popular["source"] == "popularity" and popular["score_kind"] == "interactions"
    known = client.post("/recommend", json={"user_id": "7", "k": 3}).json()
    assert known["score_kind"] == "similarity"


def test_a_new_user_with_some_features_gets_the_unknown_buckets_counted(client, rec):
    """A customer who gave only some features is answered from those, the rest taken as
    their unknown buckets (as blank cells in training), and the answer names what was missing."""
    body = {"user_id": "new", "k": 3, "features": {"age": 40, "gender": "M"}}
    answer = client.post("/recommend", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "features"
    assert answer.json()["missing_features"] == ["occupation"]
    full = {**body, "features": {**body["features"], "occupation": "writer"}}
    assert client.post("/recommend", json=full).json()["missing_features"] == []
    assert rec.recommend("new", 3, features=body["features"]).missing_features == ("occupation",)


def test_hidden_items_are_left_out_of_recommendations(rec):
    """What `[users] exclude_without_interactions` sets: those items never come back."""
    top = rec.recommend("7", 3).hits.ids
    assert rec.interactions is not None and not rec.interactions.hidden
    rec.interactions.hidden = frozenset(top)
    try:
        again = rec.recommend("7", 3).hits.ids
        assert len(again) == 3 and not set(again) & set(top)
    finally:
        rec.interactions.hidden = frozenset()
