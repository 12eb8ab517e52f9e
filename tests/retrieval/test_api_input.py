"""Client input against the service, as a careless or hostile client sends it: every bad
request is a 4xx that says what is wrong, never a 5xx, and never counts against a store's
health; a client that hangs up is counted apart; /healthz tells strangers only the status."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from embedrec.retrieval.api import create_app
from embedrec.retrieval.api.bodies import SimilarRequest
from embedrec.retrieval.api.json_route import JSONRoute
from embedrec.retrieval.failover import Failover
from tests.retrieval.conftest import Data, FaultyStore, build_store, make_recommender, serving

JSON = {"content-type": "application/json"}
FEATURES = '"features": {"age": 40, "gender": "M", "occupation": "writer"}'


def post(client: httpx.Client, path: str, body: bytes | str) -> httpx.Response:
    return client.post(path, content=body, headers=JSON)


def assert_4xx(response: httpx.Response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, response.text[:500]
    assert response.json()["detail"]


# -- non-finite numbers and strict parsing (items 10 and 14) -----------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/similar", '{"item_id": "1", "k": 1e400}'),
        ("/similar", '{"item_id": "1", "k": NaN}'),
        ("/similar", '{"item_id": "1", "k": Infinity}'),
        ("/similar", '{"item_id": "1", "k": -Infinity}'),
        (
            "/recommend",
            '{"user_id": "new", "features": {"age": 1e400, "gender": "M", "occupation": "x"}}',
        ),
        ("/recommend", '{"user_id": "1", "filter": {"year": {"$gt": NaN}}}'),
        ("/search", '{"text": "a", "filter": {"year": {"$lt": 1e400}}}'),
        ("/search", '{"text": "a", "k": -1e400}'),
    ],
)
def test_non_finite_numbers_are_422(client, path, body):
    response = post(client, path, body)
    assert_4xx(response, 422)
    assert response.json()["errors"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/similar", {"item_id": "1", "k": "10"}, "k"),
        ("/similar", {"item_id": "1", "k": True}, "k"),
        ("/similar", {"item_id": "1", "k": 10.0}, "k"),
        ("/recommend", {"user_id": "1", "exclude_seen": "false"}, "exclude_seen"),
        ("/recommend", {"user_id": "1", "exclude_seen": 0}, "exclude_seen"),
        (
            "/recommend",
            {"user_id": "n", "features": "age=40, gender=M"},
            "features",
        ),
        ("/search", {"text": "a", "k": "3"}, "k"),
    ],
)
def test_bodies_are_parsed_strictly(client, path, body, field):
    response = client.post(path, json=body)
    assert_4xx(response, 422)
    assert response.json()["errors"][0]["loc"][:2] == ["body", field]


def test_the_422_handler_writes_non_finite_inputs():
    """Whatever reaches it: FastAPI's own handler fails on an inf input and answers 500."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from embedrec.retrieval.api.errors import add_error_handlers

    app = FastAPI()
    add_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        error = {"type": "int_type", "loc": ("body", "k"), "msg": "no", "input": float("inf")}
        raise RequestValidationError([error])

    response = TestClient(app).get("/boom")
    assert response.status_code == 422 and response.json()["errors"][0]["input"] is None


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/similar", "/recommend", "/search"])
def test_json_routes_refuse_other_media_types_with_415(client, path, content_type):
    body = b'{"item_id": "1", "user_id": "1", "text": "star"}'
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert_4xx(response, 415)
    assert "application/json" in response.json()["detail"]


def test_media_type_parameters_and_json_suffixes_are_json(client):
    body = b'{"item_id": "1", "k": 2}'
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        ok = client.post("/similar", content=body, headers={"content-type": content_type})
        assert ok.status_code == 200, ok.text
    image = client.post("/search/image", content=b"{}", headers=JSON)
    assert_4xx(image, 415)
    assert "multipart/form-data" in image.json()["detail"]


# -- filters (item 11) --------------------------------------------------------------------------


def nested(depth: int) -> str:
    """A filter of `depth` nested $and, as JSON text (json.dumps itself recurses)."""
    return '{"$and": [' * depth + '{"year": {"$gt": 1990}}' + "]}" * depth


@pytest.mark.parametrize("depth", [20, 300, 5000])
def test_deep_filters_are_4xx_on_every_route(client, data: Data, depth):
    flt = nested(depth)
    for path, fields in (
        ("/similar", '"item_id": "1"'),
        ("/recommend", '"user_id": "1"'),
        ("/recommend", f'"user_id": "new", {FEATURES}'),
        ("/search", '"text": "star wars"'),
    ):
        assert_4xx(post(client, path, f'{{{fields}, "filter": {flt}}}'))
    png = ("q.png", _png(data), "image/png")
    assert_4xx(client.post("/search/image", files={"file": png}, data={"filter": flt}))


def _png(data: Data) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(data.images[0]).save(out, format="PNG")
    return out.getvalue()


BAD_INPUT = [
    ("/recommend", f'{{"user_id": "1", "filter": {nested(300)}}}'),
    ("/recommend", '{"user_id": "1", "filter": {"year": {"$gt": "1990"}}}'),
    ("/recommend", '{"user_id": "1", "filter": {"$or": []}}'),
    ("/recommend", '{"user_id": "1", "k": 1e400}'),
    ("/similar", '{"item_id": "1", "space": "two-tower", "filter": {"year": {"$regex": "x"}}}'),
    ("/similar", f'{{"item_id": "1", "space": "two-tower", "filter": {nested(300)}}}'),
    ("/similar", '{"item_id": "nope", "space": "two-tower"}'),
]


def test_client_errors_never_count_against_a_store(data: Data, tmp_path):
    """With a replica configured, bad requests leave the primary in service: none fails
    over, none reaches the replica, and the next good request is the primary's."""

    def counted(name: str) -> FaultyStore:
        store = build_store(
            f"faiss:{tmp_path}/{name}?index=Flat", data.item_ids, data.item_vectors, data.item_meta
        )
        return FaultyStore(store, healthy_calls=10**9)

    primary, replica = counted("p"), counted("r")
    rec = make_recommender(
        data, tmp_path, two_tower=Failover("two-tower", primary, replica, cooldown_s=60)
    )
    with serving(create_app(rec)) as base, httpx.Client(base_url=base, timeout=60) as c:
        for path, body in BAD_INPUT:
            assert_4xx(post(c, path, body))
        calls = primary.calls
        assert c.post("/recommend", json={"user_id": "1", "k": 3}).status_code == 200
        text = c.get("/metrics").text
    assert primary.calls > calls and replica.calls == 0
    assert rec.fallback_counts() == {}
    assert 'status="5' not in text


# -- a client that hangs up (item 12) ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/recommend", "/search/image"])
def test_a_client_that_hangs_up_mid_body_counts_as_499(rec, path):
    if path == "/recommend":
        content_type, part = b"application/json", b'{"user_id": '
    else:
        content_type = b"multipart/form-data; boundary=xyz"
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n\r\n'
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 1000\r\n\r\n"
    with serving(create_app(rec)) as base, httpx.Client(base_url=base) as c:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head % (path.encode(), content_type) + part)
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        gone = f'embedrec_requests_total{{endpoint="{path}",status="499"}} 1.0'
        while gone not in (text := c.get("/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
    assert 'status="500"' not in text and 'status="400"' not in text


# -- /healthz (item 13) -------------------------------------------------------------------------


def test_healthz_shows_where_the_stores_are_only_with_the_key(rec):
    uris = rec.store_uris()
    with serving(create_app(rec, api_key="s3cret")) as base, httpx.Client(base_url=base) as c:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            stranger = c.get("/healthz", headers=headers)
            assert stranger.status_code == 200 and stranger.json() == {"status": "ok"}
            assert uris["text"]["primary"] not in stranger.text
        keyed = c.get("/healthz", headers={"X-API-Key": "s3cret"}).json()
        bearer = c.get("/healthz", headers={"Authorization": "Bearer s3cret"}).json()
    assert keyed == bearer == {"status": "ok", "spaces": uris}


# -- how routes are declared ------------------------------------------------------------------


def test_a_json_route_takes_one_body_model_and_nothing_else():
    async def with_query(req: SimilarRequest, page: int = 1) -> Response: ...

    async def returning_a_dict(req: SimilarRequest) -> dict: ...

    async def fine(req: SimilarRequest) -> Response: ...

    for endpoint in (with_query, returning_a_dict):
        with pytest.raises(TypeError, match="one body model"):
            JSONRoute("/x", endpoint, methods=["POST"])
    assert JSONRoute("/x", fine, methods=["POST"]).model is SimilarRequest


def test_each_app_counts_in_its_own_registry(rec):
    import prometheus_client

    first, second = create_app(rec), create_app(rec)
    with serving(first) as a, serving(second) as b:
        assert httpx.post(f"{a}/similar", json={"item_id": "1", "k": 2}).status_code == 200
        seen = httpx.get(f"{a}/metrics").text
        other = httpx.get(f"{b}/metrics").text
    assert 'embedrec_requests_total{endpoint="/similar",status="200"} 1.0' in seen
    assert 'endpoint="/similar"' not in other
    assert b"embedrec_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_orjson_is_what_refuses_non_finite_json():
    """The contract that `JSONRoute` relies on, pinned: orjson refuses these outright."""
    for text in (b"1e400", b"NaN", b"-Infinity", b'"\\udce9"', b"[" * 1100 + b"]" * 1100):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(text)


# -- request headers and feature types (#23) ---------------------------------------------------


def test_request_headers_over_the_limit_are_431(client):
    from embedrec.retrieval.api.middleware import MAX_HEADER_BYTES, MAX_HEADERS

    body = b'{"item_id": "1", "k": 2}'
    under = {**JSON, "x-pad": "a" * (MAX_HEADER_BYTES // 2)}
    assert post_with(client, body, under).status_code == 200
    for headers in (
        {**JSON, "x-pad": "a" * MAX_HEADER_BYTES},  # was read into memory whole, any size
        {**JSON, **{f"x-h{n}": "1" for n in range(MAX_HEADERS + 1)}},
    ):
        response = post_with(client, body, headers)
        assert_4xx(response, 431)
        assert "request headers too large" in response.json()["detail"]
    assert post_with(client, body, JSON).status_code == 200  # and the service still answers


def post_with(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/similar", content=body, headers=headers)


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"age": 40, "gender": 1, "occupation": "writer"}, "gender"),
        ({"age": 40, "gender": "M", "occupation": True}, "occupation"),
        ({"age": 40, "gender": False, "occupation": "writer"}, "gender"),
        ({"age": 40, "gender": "M", "occupation": 7.5}, "occupation"),
    ],
)
def test_a_number_or_bool_for_a_categorical_feature_is_422(client, features, named):
    """Was served as an unknown category (the feature-only vector of "1" or "True")."""
    response = client.post("/recommend", json={"user_id": "new", "k": 3, "features": features})
    assert_4xx(response, 422)
    detail = response.json()["errors"][0]
    assert detail["loc"] == ["body", "features", named], detail
    assert "a category as a string" in detail["msg"], detail
    unknown = {**features, named: "no such category"}  # a string it never saw: unknown, served
    ok = client.post("/recommend", json={"user_id": "new", "k": 3, "features": unknown})
    assert ok.status_code == 200 and ok.json()["source"] == "features"
