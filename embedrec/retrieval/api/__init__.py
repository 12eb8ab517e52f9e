"""The HTTP service: `create_app(recommender)`, served by `embedrec serve CONFIG`.

Data endpoints (`/similar`, `/recommend`, `/search`, `/search/image`) need the API key when
one is set (`api_key`, else `EMBEDREC_API_KEY`), as `X-API-Key: KEY` or `Authorization:
Bearer KEY`; `/healthz` (status only, without the key), `/metrics` and the OpenAPI docs
(`/docs`, `/openapi.json`) are open. `POST /admin/reload` (with a `Reloader`) always needs the
key: where none is set it is refused (403), so an open service cannot be reloaded by anyone.

Client input never causes a 5xx, nor counts against a store's health: a body that is not
strict JSON or fails validation is 422 (numbers must be finite, `"k": "10"` is not a
number), a body of another media type 415, a bad filter, image or query 400, an unknown
item 404, a body over its limit 413. 503 means a store (and its replica, if any) is
unavailable. A client that hangs up before its answer counts as 499 in `/metrics`.

Modules: `bodies` (request and response bodies, strict JSON), `routes`, `middleware` (API
key, body limits, timing), `metrics` (prometheus_client), `errors`, `app` (`create_app`).
"""

from embedrec.retrieval.api.app import create_app
from embedrec.retrieval.api.bodies import MAX_IMAGE_BYTES, MAX_JSON_BODY, MAX_K, UserFeatures

__all__ = ["MAX_IMAGE_BYTES", "MAX_JSON_BODY", "MAX_K", "UserFeatures", "create_app"]
