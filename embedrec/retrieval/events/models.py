"""What an event is: a user's interaction with an item, or a change to the catalogue, each
validated into a pydantic model, or rejected with the reason (`parse_event`).

Interaction: `{"event_id", "user_id", "item_id", "timestamp", "kind"?, "weight"?}`.
Catalogue: `{"event_id", "op": "added" | "changed" | "removed", "item_id", "timestamp"?,
"fields"?: {metadata}, "text"?: "..."}`; an event with an `op` is a catalogue event. A
timestamp is epoch seconds or ISO-8601 (a zone-less one is UTC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedrec.stores.base import MetadataValue, check_metadata
from embedrec.stores.errors import MetadataError

MAX_EVENTS = 1_000
"""The most events one `POST /events` may carry (a longer batch is a 422)."""
MAX_ID = 512
MAX_TEXT = 10_000
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""An id: no control characters (a history entry joins an item id and an event id)."""


def epoch_seconds(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (UTC where it names no zone)."""
    if isinstance(value, bool):
        raise ValueError("a timestamp is epoch seconds or an ISO-8601 string, not a boolean")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not isinstance(value, (int, float)):
        raise ValueError("a timestamp is epoch seconds or an ISO-8601 string")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a time (epoch seconds, finite, not negative)")
    return seconds


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id


class InteractionEvent(_Event):
    user_id: Id
    item_id: Id
    timestamp: float
    kind: Annotated[str, Field(min_length=1, max_length=64)] = "interaction"
    weight: Annotated[float, Field(allow_inf_nan=False)] = 1.0

    _time = field_validator("timestamp", mode="before")(epoch_seconds)


class CatalogueEvent(_Event):
    op: Literal["added", "changed", "removed"]
    item_id: Id
    timestamp: float | None = None
    fields: dict[str, MetadataValue] = Field(default_factory=dict)
    """The item's metadata (its catalogue fields, which the two-tower item tower reads)."""
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)] | None = None
    """What the text space embeds; without it the text space leaves the item as it is."""

    @field_validator("timestamp", mode="before")
    @classmethod
    def _time(cls, value: Any) -> float | None:
        return None if value is None else epoch_seconds(value)

    @field_validator("fields")
    @classmethod
    def _storable(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        try:
            return check_metadata("event", value)
        except MetadataError as exc:
            raise ValueError(str(exc)) from None


Event = InteractionEvent | CatalogueEvent


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that could not be applied, and why: what `POST /events` answers and the
    dead-letter stream keeps."""

    index: int
    event_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


def parse_event(raw: Any, index: int = 0) -> Event | Rejection:
    """`raw` (a decoded JSON object) as an event, or a `Rejection` naming the field."""
    if not isinstance(raw, dict):
        return Rejection(index, None, f"an event is a JSON object, got {type(raw).__name__}")
    event_id = raw.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    model = CatalogueEvent if "op" in raw else InteractionEvent
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        return Rejection(index, event_id, _reason(exc))


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_events(raws: list[Any]) -> tuple[list[Event], list[Rejection]]:
    events: list[Event] = []
    rejected: list[Rejection] = []
    for n, raw in enumerate(raws):
        parsed = parse_event(raw, n)
        (rejected if isinstance(parsed, Rejection) else events).append(parsed)  # type: ignore[arg-type]
    return events, rejected
