"""The pointer of a Pinecone alias: one record in embedrec's reserved namespace (where the
store info records live), read when a store opens and replaced whole by a swap (one upsert
of one record, so a reader sees the old pointer or the new one). Beside it, the alias's
rebuild lease record (`LeaseRecord`, for leases/timed.py)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from embedrec.stores.errors import CorruptStore, StoreUnavailable
from embedrec.stores.lifecycle.generations import NAME

INFO_NAMESPACE = "__embedrec_store_info__"
"""The reserved namespace (see store.py), holding store info and alias records."""
SEPARATOR = "__"
FORMAT = 1

Call = Callable[..., Any]
"""`call(what, fn, **kwargs)`: one request through the store's retry schedule."""


def alias_id(namespace: str) -> str:
    return "alias-" + hashlib.sha256(namespace.encode()).hexdigest()[:32]


def generation_namespace(namespace: str, name: str) -> str:
    return f"{namespace}{SEPARATOR}{name}"


def read_alias(call: Call, index: Any, namespace: str, where: str) -> dict[str, Any] | None:
    """{"live": name, "previous": [names]} of the alias `namespace`, None when it is none;
    `CorruptStore` naming the record when it is damaged."""
    rid = alias_id(namespace)
    record = call("fetch", index.fetch, ids=[rid], namespace=INFO_NAMESPACE).vectors.get(rid)
    if record is None:
        return None
    try:
        raw = json.loads((record.metadata or {})["alias"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStore(f"{where}: unreadable alias record {rid!r}: {exc}") from None
    ok = (
        isinstance(raw, dict)
        and raw.get("format") == FORMAT
        and isinstance(raw.get("live"), str)
        and NAME.fullmatch(raw["live"])
        and isinstance(raw.get("previous"), list)
        and all(isinstance(p, str) and NAME.fullmatch(p) for p in raw["previous"])
    )
    if not ok:
        raise CorruptStore(
            f"{where}: alias record {rid!r} of namespace {namespace!r}: {raw!r:.200}"
        )
    return {"live": raw["live"], "previous": list(raw["previous"])}


def write_alias(
    call: Call, index: Any, namespace: str, pointer: dict[str, Any], dim: int, timeout: float
) -> None:
    """Replace the pointer, then wait (up to `timeout` s) until a fetch shows it."""
    raw = {"format": FORMAT, "live": pointer["live"], "previous": list(pointer["previous"])}
    meta = {"alias": json.dumps(raw, sort_keys=True), "namespace": namespace}
    want = {"live": raw["live"], "previous": raw["previous"]}
    _put(call, index, alias_id(namespace), meta, dim, timeout,
         lambda: read_alias(call, index, namespace, namespace) == want)  # fmt: skip


def _put(
    call: Call,
    index: Any,
    rid: str,
    meta: dict[str, Any],
    dim: int,
    timeout: float,
    shows: Callable[[], bool],
) -> None:
    """Upsert one record of the reserved namespace, then wait until `shows()`."""
    item = {"id": rid, "values": [1.0] + [0.0] * (dim - 1), "metadata": meta}
    call("upsert", index.upsert, vectors=[item], namespace=INFO_NAMESPACE)
    deadline = time.monotonic() + timeout
    while not shows():
        if time.monotonic() >= deadline:
            raise StoreUnavailable(f"the record {rid!r} is not visible after {timeout:g} s")
        time.sleep(0.05)


class LeaseRecord:
    """The rebuild lease record of the alias `namespace` (see leases/timed.py)."""

    def __init__(
        self, call: Call, index: Any, namespace: str, dim: int, timeout: float, where: str
    ) -> None:
        self.call, self.index, self.dim, self.timeout = call, index, dim, timeout
        self.rid = "lease-" + alias_id(namespace).removeprefix("alias-")
        self.where = f"{where} (lease record {self.rid!r})"

    def read(self) -> dict[str, Any] | None:
        fetched = self.call("fetch", self.index.fetch, ids=[self.rid], namespace=INFO_NAMESPACE)
        record = fetched.vectors.get(self.rid)
        if record is None:
            return None
        try:
            raw = json.loads((record.metadata or {})["lease"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStore(f"{self.where}: unreadable: {exc}") from None
        if not isinstance(raw, dict):
            raise CorruptStore(f"{self.where}: {raw!r:.200}")
        return raw

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record and wait until a read shows it, or shows that another claimant
        wrote after it (the timed claim's read-back then decides)."""
        before = self.read()
        meta = {"lease": json.dumps(data, sort_keys=True)}
        want = json.loads(meta["lease"])

        def shows() -> bool:
            now = self.read()
            return now == want or (now != before and now is not None)

        _put(self.call, self.index, self.rid, meta, self.dim, self.timeout, shows)
