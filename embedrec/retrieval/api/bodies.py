"""What the service's routes take and give: the request and response bodies, their limits,
and the orjson response class."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from embedrec.retrieval.client import Results
from embedrec.retrieval.events.models import MAX_EVENTS
from embedrec.retrieval.history import HISTORY_CAP, Interaction

MAX_K = 1_000
MAX_TEXT = 10_000
MAX_ID = 512
MAX_JSON_BODY = 1024 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_FORM_BODY = MAX_IMAGE_BYTES + 64 * 1024
"""An image upload plus its form fields and multipart framing."""


Filter = Annotated[
    dict[str, Any] | None,
    Field(
        description='Metadata filter, e.g. {"genres": {"$in": ["Comedy"]}, '
        '"year": {"$gte": 1990}}; operators $eq $ne $gt $gte $lt $lte $in $nin $exists, '
        "$and / $or",
    ),
]
K = Annotated[int, Field(ge=1, le=MAX_K, description=f"results wanted, 1..{MAX_K}")]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class Body(BaseModel):
    """A request body: unknown fields refused, and no coercion (`"k": "10"` is not 10)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SimilarRequest(Body):
    item_id: Id
    k: K = 10
    filter: Filter = None
    space: Annotated[str, Field(pattern="^(text|image|two-tower)$")] | None = None


FeatureValue = (
    Annotated[str, Field(max_length=MAX_TEXT)]
    | int
    | float
    | bool
    | Annotated[list[Annotated[str, Field(max_length=MAX_ID)]], Field(max_length=1_000)]
)
UserFeatures = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=MAX_ID)], FeatureValue],
    Field(max_length=256),
]
"""A new user's features: the columns the two-tower model declares (its .json lists them
under towers.user), checked against that declaration before any vector is computed."""


class HistoryEvent(Body):
    item_id: Id
    timestamp: float | None = Field(None, description="epoch seconds")


class RecommendRequest(Body):
    user_id: Id | None = Field(
        None, description="none: a new user (history, features or popularity)"
    )
    k: K = 10
    exclude_seen: bool = True
    filter: Filter = None
    features: UserFeatures | None = Field(
        None,
        description="for a user the service does not know: the feature-only tower, from the "
        "user features the model declares",
    )
    history: list[Id | HistoryEvent] | None = Field(
        None,
        max_length=HISTORY_CAP,
        description=f"items the user interacted with, oldest first (ids, or objects with "
        f"item_id and timestamp), after their stored history; at most {HISTORY_CAP}. Ids the "
        "store lacks are dropped and counted in unknown_history",
    )
    now: float | None = Field(
        None,
        description="epoch seconds the history is read as of (a sequence model with "
        "staleness_buckets reads the time since its last event); default: the time of the "
        "request",
    )

    def events(self) -> list[str | Interaction] | None:
        if self.history is None:
            return None
        return [
            h if isinstance(h, str) else Interaction(h.item_id, h.timestamp) for h in self.history
        ]


class SearchRequest(Body):
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    k: K = 10
    filter: Filter = None


class EventsRequest(Body):
    events: list[Any] = Field(
        max_length=MAX_EVENTS,
        description=f"at most {MAX_EVENTS:,} events, each validated on its own: interactions "
        '{"event_id", "user_id", "item_id", "timestamp", "kind"?, "weight"?} (timestamp '
        'epoch seconds or ISO-8601) and catalogue events {"event_id", "op": "added" | '
        '"changed" | "removed", "item_id", "fields"?, "text"?}',
    )


class HistoryRequest(Body):
    user_id: Id


class LiveEntryOut(BaseModel):
    item_id: str
    timestamp: float | None


class HistoryOut(BaseModel):
    user_id: str
    available: bool = Field(description="false: the live histories (Redis) cannot be read now")
    live: list[LiveEntryOut] = Field(
        description="the user's interactions since training, oldest first"
    )


class RejectionOut(BaseModel):
    index: int = Field(description="the event's position in the batch")
    event_id: str | None
    reason: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    rejections: list[RejectionOut]


class HitOut(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any] | None = None


class ResultsOut(BaseModel):
    source: str = Field(
        description="what answered: the space searched, or for /recommend 'two-tower', "
        "'history' (a vector from the request's history alone), 'features' (a new user's "
        "feature-only vector), 'stored-vector' (a known user's stored vector or history: "
        "the live history of [stream] could not be read) or 'popularity'"
    )
    score_kind: str = Field(
        description="'similarity' (the store's score, higher is closer) or, for popularity, "
        "'interactions' (the item's count in the user data): not comparable with similarity"
    )
    missing_features: list[str] = Field(
        [],
        description="for 'features': the user features left out or blank, each taken as its "
        "unknown bucket (its count: how many the answer did without)",
    )
    results: list[HitOut]
    unknown_history: int | None = Field(
        None, description="/recommend: ids of the request's history dropped as unknown"
    )


class Problem(BaseModel):
    """Every error answer: one line saying what to fix; a 422 adds each invalid field."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class JSONBytes(Response):
    """JSON rendered by orjson, which writes NaN and infinities as null rather than failing
    (FastAPI's own `ORJSONResponse` is deprecated)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain)


def _plain(value: Any) -> Any:
    """What orjson cannot write as it is (a validation error's bytes input or exception
    context): bytes as text, anything else by its str()."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def results_body(results: Results, *, history: bool = False) -> JSONBytes:
    """A `ResultsOut` body serialised straight from the hits' columns: a pydantic model per
    hit would cost more than the search. `history`: with `unknown_history` (/recommend)."""
    hits = results.hits
    payload: dict[str, Any] = {
        "source": results.source,
        "score_kind": results.score_kind,
        "missing_features": list(results.missing_features),
        "results": [
            {"id": i, "score": s, "metadata": m}
            for i, s, m in zip(hits.ids, hits.scores, hits.metadata, strict=True)
        ],
    }
    if history:
        payload["unknown_history"] = results.unknown_history
    return JSONBytes(payload)
