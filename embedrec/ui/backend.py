"""The queries the pages send: to a `Recommender` in this process, or to `embedrec serve`.

Both answer with an `Answer`: the hits, what answered (the space, or for recommendations
"features" / "popularity"), which store answered (primary or replica) and the time taken.
Whatever a query can fail with (a bad filter, an unknown item, a store that is down, a
service that does not answer) is raised as `QueryError`, whose message the page shows.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from embedrec.retrieval.events.histories import LiveHistories
from embedrec.stores import Hit, StoreError

FALLBACKS = re.compile(r"^embedrec_store_fallbacks_total\{([^}]*)\}\s+(\S+)", re.M)


class QueryError(Exception):
    """A query the page answers with a message rather than results."""


@dataclass
class Answer:
    hits: list[Hit]
    source: str
    store: str
    """"primary", "replica", or "unknown" where the service does not say."""
    seconds: float


@dataclass
class LiveHistory:
    """A user's interactions since training (events), oldest first: (item id, epoch s)."""

    available: bool
    entries: list[tuple[str, float | None]]


class Backend(Protocol):
    spaces: list[str]
    similar_space: str

    def live_history(self, user_id: str) -> LiveHistory | None:
        """None where the service takes no live events (no [stream])."""
        ...

    def recommend(
        self,
        user_id: str | None,
        k: int,
        filter: Mapping | None,
        features: Mapping | None,
        history: Sequence[str] | None = None,
    ) -> Answer: ...

    def similar(self, item_id: str, k: int, space: str, filter: Mapping | None) -> Answer: ...

    def search_text(self, text: str, k: int, filter: Mapping | None) -> Answer: ...

    def search_image(self, image: bytes, k: int, filter: Mapping | None) -> Answer: ...


class InProcess:
    """A `Recommender` in this process; a replica answered when its fallback count grew."""

    def __init__(self, recommender: Any) -> None:
        self.recommender = recommender
        self.spaces = recommender.spaces
        self.similar_space = recommender.similar_space

    def _fallbacks(self, space: str) -> int:
        return sum(n for (s, _), n in self.recommender.fallback_counts().items() if s == space)

    def live_history(self, user_id: str) -> LiveHistory | None:
        histories = self.recommender.histories
        if not isinstance(histories, LiveHistories):  # no [stream] redis
            return None
        read = histories.read([user_id])
        entries = [(e.item_id, e.timestamp) for e in read.entries.get(user_id, [])]
        return LiveHistory(not read.unavailable, entries)

    def _answer(self, space: str, call: Callable[[], Any]) -> Answer:
        before = self._fallbacks(space)
        started = time.perf_counter()
        try:
            results = call()
        except (StoreError, ValueError, LookupError) as exc:
            raise QueryError(str(exc)) from None
        seconds = time.perf_counter() - started
        store = "replica" if self._fallbacks(space) > before else "primary"
        return Answer(list(results.hits), results.source, store, seconds)

    def recommend(
        self,
        user_id: str | None,
        k: int,
        filter: Mapping | None,
        features: Mapping | None,
        history: Sequence[str] | None = None,
    ) -> Answer:
        return self._answer(
            "two-tower",
            lambda: self.recommender.recommend(
                user_id, k, filter=filter, features=features, history=history
            ),
        )

    def similar(self, item_id: str, k: int, space: str, filter: Mapping | None) -> Answer:
        return self._answer(
            space, lambda: self.recommender.similar(item_id, k, filter, space=space)
        )

    def search_text(self, text: str, k: int, filter: Mapping | None) -> Answer:
        return self._answer("text", lambda: self.recommender.search_text(text, k, filter))

    def search_image(self, image: bytes, k: int, filter: Mapping | None) -> Answer:
        return self._answer("image", lambda: self.recommender.search_image(image, k, filter))


class Service:
    """A running `embedrec serve` at `url`, sent the API key given (`EMBEDREC_API_KEY`),
    serving the spaces its config names. Which store answered is read from the service's
    fallback counter in /metrics."""

    def __init__(
        self,
        url: str,
        spaces: list[str],
        similar_space: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.url = url
        self.spaces = spaces
        self.similar_space = similar_space
        self._get("/healthz")  # a service that does not answer is told now, not per query

    def _get(self, path: str) -> Any:
        try:
            response = self.client.get(path)
        except httpx.HTTPError as exc:
            raise QueryError(f"the service at {self.url} did not answer: {exc}") from None
        _check(response)
        return response

    def _fallbacks(self, space: str) -> float | None:
        try:
            text = self._get("/metrics").text
        except QueryError:
            return None
        return sum(
            float(n) for labels, n in FALLBACKS.findall(text) if f'space="{space}"' in labels
        )

    def _answer(self, space: str, path: str, **kw: Any) -> Answer:
        before = self._fallbacks(space)
        started = time.perf_counter()
        try:
            response = self.client.post(path, **kw)
        except httpx.HTTPError as exc:
            raise QueryError(f"the service at {self.url} did not answer: {exc}") from None
        seconds = time.perf_counter() - started
        _check(response)
        body = response.json()
        after = self._fallbacks(space)
        if before is None or after is None:
            store = "unknown"
        else:
            store = "replica" if after > before else "primary"
        hits = [Hit(r["id"], r["score"], r.get("metadata")) for r in body["results"]]
        return Answer(hits, body["source"], store, seconds)

    def live_history(self, user_id: str) -> LiveHistory | None:
        try:
            response = self.client.post("/history", json={"user_id": user_id})
        except httpx.HTTPError as exc:
            raise QueryError(f"the service at {self.url} did not answer: {exc}") from None
        if response.status_code == 404:  # the service takes no live events
            return None
        _check(response)
        body = response.json()
        entries = [(e["item_id"], e["timestamp"]) for e in body["live"]]
        return LiveHistory(body["available"], entries)

    def recommend(
        self,
        user_id: str | None,
        k: int,
        filter: Mapping | None,
        features: Mapping | None,
        history: Sequence[str] | None = None,
    ) -> Answer:
        body = {"user_id": user_id, "k": k, "filter": filter, "features": features}
        if history is not None:
            body["history"] = list(history)
        return self._answer("two-tower", "/recommend", json=body)

    def similar(self, item_id: str, k: int, space: str, filter: Mapping | None) -> Answer:
        body = {"item_id": item_id, "k": k, "space": space, "filter": filter}
        return self._answer(space, "/similar", json=body)

    def search_text(self, text: str, k: int, filter: Mapping | None) -> Answer:
        return self._answer("text", "/search", json={"text": text, "k": k, "filter": filter})

    def search_image(self, image: bytes, k: int, filter: Mapping | None) -> Answer:
        data = {"k": str(k), **({"filter": json.dumps(filter)} if filter else {})}
        files = {"file": ("query.png", image, "application/octet-stream")}
        return self._answer("image", "/search/image", data=data, files=files)


def _check(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    raise QueryError(f"the service answered {response.status_code}: {detail}")
