"""The service through a real uvicorn on 127.0.0.1, with httpx: every endpoint, auth,
limits, the fallback path, and schemathesis finding no 5xx."""

from __future__ import annotations

import gc
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.testclient import TestClient

from embedrec.retrieval.api import MAX_IMAGE_BYTES, create_app
from embedrec.retrieval.failover import Failover
from tests.retrieval.conftest import FaultyStore, build_store, make_recommender, serving

CLI = "import sys; from embedrec.cli import main; sys.exit(main())"
JSON = {"content-type": "application/json"}
"""`embedrec` as its console script runs it, from this interpreter."""

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["results"]]


def test_healthz_docs_and_schema(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert set(health["spaces"]) == {"text", "image", "two-tower"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/similar", "/recommend", "/search", "/search/image"} <= set(paths)


def test_similar(client, rec):
    response = client.post("/similar", json={"item_id": "50", "k": 5, "space": "text"})
    assert ids(response) == [h.id for h in rec.similar("50", 5, space="text").hits]
    assert response.json()["source"] == "text"
    flt = {"genres": {"$in": ["Comedy"]}}
    body = client.post("/similar", json={"item_id": "50", "k": 5, "filter": flt}).json()
    assert all("Comedy" in h["metadata"]["genres"] for h in body["results"])
    missing = client.post("/similar", json={"item_id": "nope"})
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]


def test_recommend_known_new_and_unknown_users(client, rec, data):
    known = client.post("/recommend", json={"user_id": "7", "k": 8})
    assert ids(known) == [h.id for h in rec.recommend("7", 8).hits]
    assert known.json()["source"] == "two-tower"
    features = {"age": 40, "gender": "M", "occupation": "writer"}
    new = client.post("/recommend", json={"user_id": "new", "k": 3, "features": features})
    assert new.json()["source"] == "features" and len(ids(new)) == 3
    popular = client.post("/recommend", json={"user_id": "who", "k": 3})
    assert popular.json()["source"] == "popularity"
    assert ids(popular) == [h.id for h in rec.recommend("who", 3).hits]
    with_seen = client.post("/recommend", json={"user_id": "7", "exclude_seen": False})
    assert len(ids(with_seen)) == 10


def test_filtered_calls_leave_the_event_loop_and_plain_ones_stay_on_it(rec, monkeypatch):
    """A filtered search may score many vectors exactly: it runs in the thread pool, so it
    does not stall the other requests; an unfiltered one stays on the loop, where it costs
    no thread hop (`routes.offloaded`; figures in benchmarks/slow_query_mix.py). Both ways,
    `/recommend` comes to `recommend_batch` (on the loop, through the `RecommendBatcher`)."""
    threads: list[threading.Thread] = []
    for name in ("similar", "recommend_batch"):
        real = getattr(rec, name)

        def recording(*args, _real=real, **kw):
            threads.append(threading.current_thread())
            return _real(*args, **kw)

        monkeypatch.setattr(rec, name, recording)
    flt = {"genres": {"$in": ["Comedy"]}}
    with TestClient(create_app(rec)) as client:
        loop = client.portal.call(threading.current_thread)
        for path, body in (("/similar", {"item_id": "50"}), ("/recommend", {"user_id": "7"})):
            assert client.post(path, json=body).status_code == 200
            assert client.post(path, json=body | {"filter": flt}).status_code == 200
    assert threads[0] is loop and threads[2] is loop
    assert threads[1] is not loop and threads[3] is not loop


def test_search_text_and_image(client, data):
    assert "50" in ids(client.post("/search", json={"text": "Star Wars", "k": 3}))
    files = {"file": ("q.png", png(data.images[5]), "image/png")}
    found = client.post("/search/image", files=files, data={"k": "2"})
    assert ids(found)[0] == data.image_ids[5]
    category = data.image_meta[5]["category"]
    flt = json.dumps({"category": {"$ne": category}})
    other = client.post("/search/image", files=files, data={"k": "3", "filter": flt})
    assert all(h["metadata"]["category"] != category for h in other.json()["results"])


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/similar", {"item_id": "1", "k": 1001}, 422, "less than or equal to 1000"),
        ("/similar", {"item_id": "1", "k": 0}, 422, "greater than or equal to 1"),
        ("/search", {"text": "x" * 10_001}, 422, "at most 10000 characters"),
        ("/search", {"text": "  "}, 400, "empty text"),
        ("/search", {"text": "a", "filter": {"year": {"$regex": "19"}}}, 400, "'$regex'"),
        ("/recommend", {"user_id": "1", "filter": {"year": {"$gt": "x"}}}, 400, "['$gt']"),
        ("/recommend", {"user_id": "1", "features": {"height": 180}}, 422, "height"),
        ("/similar", {"item_id": "1", "space": "audio"}, 422, "space"),
        ("/similar", {"item_id": "1", "extra": 1}, 422, "extra"),
    ],
)
def test_limits_and_bad_input_are_4xx_with_a_reason(client, path, body, status, needle):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert needle in response.text


@pytest.mark.parametrize("path", ["/similar", "/recommend"])
def test_bodies_that_are_not_json_are_422_and_other_methods_405(client, path):
    for body in (b"\xf0HD \xe0ni", b"{", b"[1]", b""):
        response = client.post(path, content=body, headers=JSON)
        assert response.status_code == 422 and response.json()["errors"][0]["loc"][0] == "body"
    wrong = client.get(path)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_image_limits(client):
    big = {"file": ("big.png", b"\0" * (MAX_IMAGE_BYTES + 1), "image/png")}
    too_big = client.post("/search/image", files=big)
    assert too_big.status_code == 413 and "over 10 MB" in too_big.json()["detail"]
    huge = {"file": ("huge.png", b"\0" * (12 * 1024 * 1024), "image/png")}
    refused = client.post("/search/image", files=huge)  # by Content-Length, before parsing
    assert refused.status_code == 413 and "bytes is over" in refused.json()["detail"]
    junk = client.post("/search/image", files={"file": ("x.png", b"not an image", "image/png")})
    assert junk.status_code == 400 and "cannot decode" in junk.json()["detail"]
    ok = {"file": ("x.png", png(np.zeros((28, 28), np.uint8)), "image/png")}
    bad_filter = client.post("/search/image", files=ok, data={"filter": "{year"})
    assert bad_filter.status_code == 400 and "not valid JSON" in bad_filter.json()["detail"]
    huge_json = client.post(
        "/search", content=b'{"text": "' + b"a" * 2_000_000 + b'"}', headers=JSON
    )
    assert huge_json.status_code == 413


def test_the_service_freezes_what_it_loaded_out_of_the_gc_at_start(rec):
    gc.unfreeze()
    try:
        app = create_app(rec)
        assert gc.get_freeze_count() == 0
        with TestClient(app) as c:  # runs the lifespan, as uvicorn does
            assert gc.get_freeze_count() > 0
            assert c.post("/recommend", json={"user_id": "1", "k": 2}).status_code == 200
    finally:
        gc.unfreeze()


def test_the_service_computes_with_one_torch_thread_and_gives_the_setting_back(rec):
    import torch

    def in_a_new_thread() -> int:
        """The threads torch runs with in a thread started now (as the event loop's and the
        thread pool's are): the process-wide setting, not this thread's own."""
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # what torch picks on a 2-core machine, more on a larger one
    try:
        with TestClient(create_app(rec)) as c:  # runs the lifespan, as uvicorn does
            assert in_a_new_thread() == 1
            assert c.post("/recommend", json={"history": ["1", "2"], "k": 2}).status_code == 200
        assert in_a_new_thread() == 2
    finally:
        torch.set_num_threads(threads)


def test_metrics_expose_latency_counts_and_fallbacks(client):
    client.post("/similar", json={"item_id": "1", "k": 2})
    client.post("/similar", json={"item_id": "nope"})
    text = client.get("/metrics").text
    assert "# TYPE embedrec_request_duration_seconds histogram" in text
    assert 'embedrec_request_duration_seconds_bucket{endpoint="/similar",le="+Inf"}' in text
    assert 'embedrec_requests_total{endpoint="/similar",status="200"}' in text
    assert 'embedrec_requests_total{endpoint="/similar",status="404"}' in text
    assert "# TYPE embedrec_store_fallbacks_total counter" in text


def test_api_key_guards_data_endpoints(rec):
    with serving(create_app(rec, api_key="s3cret")) as base, httpx.Client(base_url=base) as c:
        body = {"item_id": "1", "k": 2}
        refused = c.post("/similar", json=body)
        assert refused.status_code == 401 and "API key" in refused.json()["detail"]
        assert c.post("/similar", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/similar", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert c.post("/similar", json=body, headers=bearer).status_code == 200
        assert c.post("/search", json={"text": "x"}).status_code == 401
        assert c.post("/recommend", json={"user_id": "1"}).status_code == 401
        image = {"file": ("x.png", b"\x89PNG", "image/png")}
        assert c.post("/search/image", files=image).status_code == 401
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        schema = c.get("/openapi.json").json()
        assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
        for path in ("/similar", "/recommend", "/search", "/search/image"):
            assert schema["paths"][path]["post"]["security"] == [
                {"APIKeyHeader": []},
                {"HTTPBearer": []},
            ]
        assert "security" not in schema["paths"]["/healthz"]["get"]


def test_api_key_from_the_environment(rec, monkeypatch):
    monkeypatch.setenv("EMBEDREC_API_KEY", "from-env")
    with serving(create_app(rec)) as base, httpx.Client(base_url=base) as c:
        assert c.post("/similar", json={"item_id": "1"}).status_code == 401
        ok = c.post("/similar", json={"item_id": "1"}, headers={"X-API-Key": "from-env"})
        assert ok.status_code == 200


def test_primary_failing_midway_falls_back_with_no_5xx(data, tmp_path):
    primary = build_store(
        f"faiss:{tmp_path}/p?index=Flat", data.item_ids, data.item_vectors, data.item_meta
    )
    replica = build_store(
        f"faiss:{tmp_path}/r?index=Flat", data.item_ids, data.item_vectors, data.item_meta
    )
    faulty = FaultyStore(primary, healthy_calls=5)
    fo = Failover("two-tower", faulty, replica, cooldown_s=0.05)
    rec = make_recommender(data, tmp_path, two_tower=fo)
    with serving(create_app(rec)) as base, httpx.Client(base_url=base) as c:
        users = data.users["user_id"].tolist()[:30]
        answers = [c.post("/recommend", json={"user_id": u, "k": 5}) for u in users]
        assert [r.status_code for r in answers] == [200] * len(users)
        assert all(len(r.json()["results"]) == 5 for r in answers)
        metrics = c.get("/metrics").text
    served = [
        line for line in metrics.splitlines() if line.startswith("embedrec_store_fallbacks_total{")
    ]
    assert served and float(served[0].rsplit(" ", 1)[1]) >= 20
    assert faulty.calls > 5


def test_primary_failing_without_replica_is_503_naming_the_store(data, tmp_path):
    primary = build_store(
        f"faiss:{tmp_path}/p?index=Flat", data.item_ids, data.item_vectors, data.item_meta
    )
    faulty = FaultyStore(primary, healthy_calls=0)
    rec = make_recommender(data, tmp_path, two_tower=Failover("two-tower", faulty))
    with serving(create_app(rec)) as base, httpx.Client(base_url=base) as c:
        response = c.post("/recommend", json={"user_id": "1"})
    assert response.status_code == 503
    assert faulty.uri in response.json()["detail"]


# -- schemathesis ----------------------------------------------------------------------------


def test_schemathesis_finds_no_server_error(url):
    """Valid and invalid requests generated from /openapi.json for every operation (bodies,
    form fields, media types, methods): none gets a 5xx. The cases tried per operation are
    printed (pytest -s) and each operation must have been tried."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = {f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()}
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    tried: Counter[str] = Counter()

    @given(case=cases)
    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case) -> None:
        tried[f"{case.method.upper()} {case.path}"] += 1
        case.call_and_validate(checks=[not_a_server_error], timeout=60)

    no_server_error()
    print(f"schemathesis: {sum(tried.values())} cases, {dict(sorted(tried.items()))}")
    assert set(tried) == operations


def test_embedrec_serve_runs_workers_from_a_config(data, tmp_path):
    """`embedrec serve` as a user starts it: a config, two worker processes, real HTTP."""
    psutil = pytest.importorskip("psutil")
    build_store(f"faiss:{tmp_path}/tt", data.item_ids, data.item_vectors, data.item_meta).close()
    data.model.save(tmp_path / "tt.pt")
    data.users.to_csv(tmp_path / "users.csv", index=False)
    data.ratings.to_parquet(tmp_path / "ratings.parquet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "serve.toml"
    config.write_text(
        f"""
[server]
port = {port}
workers = 2
[two_tower]
uri = "faiss:{tmp_path}/tt"
model = "{tmp_path}/tt.pt"
[users]
users = "{tmp_path}/users.csv"
ratings = "{tmp_path}/ratings.parquet"
"""
    )
    cli = [sys.executable, "-c", CLI, "serve", str(config)]
    server = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "embedrec serve did not answer in 120 s"
                time.sleep(0.5)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/recommend", json={"user_id": "1", "k": 5}, timeout=30
        )
        assert answer.status_code == 200 and len(answer.json()["results"]) == 5
        workers = [p for p in psutil.Process(server.pid).children(recursive=True) if p.is_running()]
        assert len([p for p in workers if "spawn_main" in " ".join(p.cmdline())]) == 2
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_embedrec_serve_names_a_missing_store_before_starting(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text(f'[two_tower]\nuri = "faiss:{tmp_path}/none"\nmodel = "{tmp_path}/m.pt"\n')
    cli = [sys.executable, "-c", CLI, "serve", str(config)]
    done = subprocess.run([*cli, "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"no store at faiss:{tmp_path}/none (from [two_tower] uri in {config}): " in done.stderr
    assert "build it with `embedrec ingest`" in done.stderr
    assert "Traceback" not in done.stderr
