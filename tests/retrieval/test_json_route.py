"""What `JSONRoute`'s overrides assume of FastAPI and Starlette (pyproject pins the FastAPI
range they were written against): a matched route is answered by its `handle`, which
FastAPI's own differs from Starlette's only for included routers; `APIRoute.__init__` builds
`dependant`
with the parameter lists JSONRoute inspects; the body parameter's annotation is the model."""

import inspect
from pathlib import Path

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import embedrec.retrieval.api
from embedrec.retrieval.api.json_route import JSONRoute


class Body(BaseModel):
    k: int


def answer(body: Body) -> Response:
    return JSONResponse({"k": body.k})


def test_apiroute_handle_differs_from_starlettes_only_for_included_routers() -> None:
    """FastAPI 0.165's `APIRoute.handle` runs a route reached through `include_router` with
    that router's context (its dependencies, prefix, body limit) and otherwise defers to
    Starlette's `Route.handle`. JSONRoute's `handle` replaces both, so it is right only on
    the app's own router, which is where the service mounts every route."""
    source = inspect.getsource(APIRoute.handle)
    assert "_get_scope_effective_route_context(scope)" in source
    assert source.rstrip().endswith("await super().handle(scope, receive, send)")
    assert "handle" in vars(Route) and "handle" in vars(JSONRoute)
    api = Path(embedrec.retrieval.api.__file__).parent
    assert not [f.name for f in api.glob("*.py") if "include_router" in f.read_text()]


def test_dependant_has_the_lists_jsonroute_inspects() -> None:
    route = APIRoute("/x", answer, methods=["POST"])
    dependant = route.dependant
    assert isinstance(dependant, Dependant)
    for name in ("path_params", "query_params", "header_params", "cookie_params",
                 "body_params", "dependencies"):  # fmt: skip
        assert isinstance(getattr(dependant, name), list), name
    assert dependant.body_params[0].field_info.annotation is Body
    assert get_typed_return_annotation(answer) is Response


def test_a_jsonroute_answers_without_fastapis_request_handler() -> None:
    app = FastAPI()
    app.router.add_api_route("/x", answer, methods=["POST"], route_class_override=JSONRoute)
    (route,) = [r for r in app.router.routes if isinstance(r, JSONRoute)]

    def never(*_: object) -> None:
        raise AssertionError("FastAPI's request handler ran")

    route.app = never  # what Route.handle would call; JSONRoute.handle must not
    client = TestClient(app)
    assert client.post("/x", json={"k": 3}).json() == {"k": 3}
    assert client.post("/x", json={"k": "x"}).status_code == 422
    assert client.get("/x").status_code == 405
