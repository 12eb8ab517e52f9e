"""Aliases of Qdrant collections (`qdrant://host/NAME`, `qdrant+local:PATH/NAME`): Qdrant's
own collection aliases, which qdrant-client's local mode keeps too (in its meta.json).

The generations are collections `NAME__gNNNN`; the alias `NAME` points at the live one. A
swap is one `update_collection_aliases` call that deletes the alias and creates it anew, which
Qdrant applies atomically. The list of previous generations travels with each generation,
in its collection metadata (`embedrec_alias`), written before the swap that makes it live, so
that state and pointer change together in that one call.

A plain collection already called NAME is adopted as `NAME__g0000`: its points (vectors,
payloads), payload indexes and store info are copied, then NAME is deleted and the alias
created. Qdrant cannot rename a collection nor give an alias the name of one, so between
that delete and the alias (two requests) NAME does not resolve; a rerun finishes an adoption
cut there. Adopt when nothing serves the collection, or rebuild under a new name.

A local path is held by one client at a time, so the book opens its client per call and
`live_token` of a local alias reads meta.json directly, so that it can be polled while a
store on that path is open.

The rebuild lease and the generation counter (leases/): for a local path, an flock on
`PATH/NAME.rebuild.lock` and `PATH/NAME.generations.json` beside qdrant-client's files; on
a server, a timed lease in the metadata of a small collection `NAME__embedrec` (not a
generation: no `gNNNN` after the separator).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from embedrec.stores.errors import ConfigError, CorruptStore, StoreLocked, StoreNotFound
from embedrec.stores.lifecycle import file_lease, generations
from embedrec.stores.lifecycle import timed_lease as timed
from embedrec.stores.lifecycle.generations import ADOPTED, NAME, AliasState, Fingerprint, Generation
from embedrec.stores.lifecycle.leases import Holder, Lease, held
from embedrec.stores.qdrant.client_engine import INFO_KEY, ClientEngine, aliased
from embedrec.stores.small_files import ABSENT, read_json
from embedrec.stores.uri import parse_uri

SEPARATOR = "__"
ALIAS_KEY = "embedrec_alias"
"""The collection metadata key holding a generation's list of previous generations."""
LEASE_KEY = "embedrec_lease"
CONTROL = "embedrec"
"""`NAME__embedrec`: the collection whose metadata holds a server alias's lease record."""
COPY_PAGE = 256
SETTLE_S = 0.5
"""A server lease claim's settle time: Qdrant's writes are visible at once to every client."""


class QdrantBook:
    def __init__(self, uri: str) -> None:
        parsed = parse_uri(uri)
        self.raw = parsed.raw
        self.scheme = parsed.scheme
        location = parsed.location.split("?")[0].rstrip("/")
        self.folder, _, self.name = location.rpartition("/")
        if not self.name or SEPARATOR in self.name:
            raise ConfigError(f"{self.raw}: an alias is a collection name without {SEPARATOR!r}")
        self._engine = ClientEngine.connect(parsed) if parsed.scheme == "qdrant" else None

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _client(self) -> Iterator[QdrantClient]:
        """A server's client lives with the book; a local one only for the call."""
        if self._engine is not None:
            with self._engine.guard():
                yield self._engine.client
            return
        engine = ClientEngine.connect(parse_uri(self.raw.split("?")[0]))
        try:
            with engine.guard():
                yield engine.client
        finally:
            engine.close()

    def generation(self, name: str) -> Generation:
        generations.check_name(name)
        scheme, rest = self.raw.split(":", 1)
        location, sep, query = rest.partition("?")
        return Generation(name, f"{scheme}:{location.rstrip('/')}{SEPARATOR}{name}{sep}{query}")

    def _collection(self, name: str) -> str:
        return f"{self.name}{SEPARATOR}{name}"

    def _name_of(self, collection: str) -> str:
        prefix = f"{self.name}{SEPARATOR}"
        name = collection[len(prefix) :] if collection.startswith(prefix) else ""
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"{self.raw}: alias {self.name!r} points at collection {collection!r}, which is "
                f"not a generation embedrec made ({prefix}gNNNN)"
            )
        return name

    def _on_server(self, client: QdrantClient) -> list[str]:
        """The generations there are (not the lease's collection)."""
        prefix = f"{self.name}{SEPARATOR}"
        names = [c.name for c in client.get_collections().collections]
        names = [n[len(prefix) :] for n in names if n.startswith(prefix)]
        return [n for n in names if NAME.fullmatch(n)]

    def _previous(self, client: QdrantClient, collection: str) -> list[str]:
        metadata = client.get_collection(collection).config.metadata or {}
        text = metadata.get(ALIAS_KEY)
        try:
            previous = json.loads(text)["previous"] if text is not None else []
        except (TypeError, ValueError, KeyError) as exc:
            raise CorruptStore(
                f"{self.raw}: collection {collection!r} {ALIAS_KEY}: {exc}"
            ) from None
        if not isinstance(previous, list) or not all(
            isinstance(p, str) and NAME.fullmatch(p) for p in previous
        ):
            raise CorruptStore(f"{self.raw}: collection {collection!r} {ALIAS_KEY}: {previous!r}")
        return previous

    # -- reading ----------------------------------------------------------------------------

    def state(self) -> AliasState:
        with self._client() as client:
            target = aliased(client, self.name)
            existing = set(self._on_server(client))
            live = self._name_of(target) if target else None
            previous = self._previous(client, target) if target else []
        previous = [p for p in previous if p in existing and p != live]
        return generations.alias_state(self.raw, self.generation, live, previous, existing)

    def live_token(self) -> str | None:
        if self._engine is not None:
            with self._client() as client:
                target = aliased(client, self.name)
            return self._name_of(target) if target else None
        meta = Path(self.folder) / "meta.json"
        raw = read_json(meta)
        if raw is ABSENT:
            return None
        aliases = raw.get("aliases") if isinstance(raw, dict) else None
        if not isinstance(aliases, dict):
            raise CorruptStore(f"{meta}: no aliases map")
        target = aliases.get(self.name)
        return self._name_of(target) if target else None

    def new_generation(self) -> Generation:
        with self._client() as client:
            taken = self._on_server(client)
        if self._engine is None:
            folder = Path(self.folder)
            lock = folder / f"{self.name}.alias.lock"
            name = file_lease.reserve(folder / f"{self.name}.generations.json", lock, taken)
        else:
            name = timed.reserve(self._record(), taken)
        return self.generation(name)

    # -- the rebuild lease ------------------------------------------------------------------

    def _record(self) -> ControlRecord:
        assert self._engine is not None
        return ControlRecord(self._engine, self._collection(CONTROL), self.raw)

    def rebuild_lease(
        self, *, wait: bool = False, say: Callable[[str], None] = lambda text: None
    ) -> contextlib.AbstractContextManager[Lease]:
        def claim(me: Holder) -> tuple[Lease | None, Holder | None]:
            if self._engine is None:
                return file_lease.FileLease.claim(self._lock_path(), me)
            return timed.TimedLease.claim(self._record(), me, settle=SETTLE_S)

        return held(claim, self.raw, wait=wait, say=say)

    def _lock_path(self) -> Path:
        return Path(self.folder) / f"{self.name}.rebuild.lock"

    def running(self) -> Holder | None:
        if self._engine is None:
            return file_lease.running(self._lock_path())
        return timed.running(self._record())

    def fingerprint(self, generation: Generation) -> Fingerprint:
        """The exact count, and the sha256 of the collection's metadata (the store info it
        serves with) and vector config."""
        collection = self._collection(generations.check_name(generation.name))
        with self._client() as client:
            if not client.collection_exists(collection):
                raise StoreNotFound(f"{generation.uri}: no such collection")
            info = client.get_collection(collection)
            count = client.count(collection, exact=True).count
        metadata = {k: v for k, v in (info.config.metadata or {}).items() if k != ALIAS_KEY}
        described = {"metadata": metadata, "vectors": info.config.params.model_dump(mode="json")}
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        return Fingerprint(generation.name, count, digest)

    # -- changing the alias -----------------------------------------------------------------

    def _point(
        self, client: QdrantClient, name: str, previous: list[str], step: str = "swap"
    ) -> None:
        """Record `previous` with generation `name`, then swap the alias to it in one call."""
        collection = self._collection(name)
        text = json.dumps({"previous": previous})
        client.update_collection(collection, metadata={ALIAS_KEY: text})
        ops: list[Any] = []
        if aliased(client, self.name) is not None:
            ops.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.name))
            )
        create = models.CreateAlias(collection_name=collection, alias_name=self.name)
        ops.append(models.CreateAliasOperation(create_alias=create))
        generations.reached(f"{step}:before-replace")
        client.update_collection_aliases(change_aliases_operations=ops)
        generations.reached(f"{step}:after-replace")

    def swap(self, generation: Generation, expect: Fingerprint | None = None) -> AliasState:
        name = generations.check_name(generation.name)
        if expect is not None:
            generations.check_fingerprint(self.fingerprint(generation), expect, self.raw)
        with self._client() as client:
            if not client.collection_exists(self._collection(name)):
                raise StoreNotFound(f"{generation.uri}: no such collection to swap in")
            target = aliased(client, self.name)
            if target is None and client.collection_exists(self.name):
                raise ConfigError(f"{self.raw} is a plain collection: adopt it before a swap")
            if target == self._collection(name):
                return self.state()
            before = [self._name_of(target), *self._previous(client, target)] if target else []
            self._point(client, name, [p for p in before if p != name])
        return self.state()

    def rollback(self) -> AliasState:
        state = self.state()
        if not state.previous:
            raise ConfigError(f"{self.raw} has no previous generation to roll back to")
        with self._client() as client:
            self._point(client, state.previous[0].name, [g.name for g in state.previous[1:]])
        return self.state()

    def drop(self, generation: Generation) -> None:
        name = generations.check_name(generation.name)
        with self._client() as client:
            if aliased(client, self.name) == self._collection(name):
                raise ConfigError(f"{self.raw}: {name} is live; swap or roll back before dropping")
            holder = self.running()
            if holder is not None and holder.generation == name:
                raise StoreLocked(f"{self.raw}: {name} is being built by {holder.describe()}")
            if not client.delete_collection(self._collection(name)):
                raise StoreNotFound(f"{self.raw} has no generation {name}")

    def adopt(self) -> Generation | None:
        with self._client() as client:
            if aliased(client, self.name) is not None:
                return None
            adopted = self._collection(ADOPTED)
            if client.collection_exists(self.name):
                client.delete_collection(adopted)  # a copy cut short: start it again
                _copy_collection(client, self.name, adopted)
                generations.reached("adopt:copied")
                client.delete_collection(self.name)
            elif not client.collection_exists(adopted):
                return None
            self._point(client, ADOPTED, [], "adopt")  # also finishes an adoption cut before it
        return self.generation(ADOPTED)


class ControlRecord:
    """A server alias's lease record (leases/timed.py): the metadata of `NAME__embedrec`, a
    one-dimensional collection made when first written."""

    def __init__(self, engine: ClientEngine, collection: str, where: str) -> None:
        self.engine = engine
        self.collection = collection
        self.where = f"{where} (lease in collection {collection!r})"

    def read(self) -> dict[str, Any] | None:
        with self.engine.guard():
            if not self.engine.client.collection_exists(self.collection):
                return None
            metadata = self.engine.client.get_collection(self.collection).config.metadata or {}
        text = metadata.get(LEASE_KEY)
        try:
            raw = None if text is None else json.loads(text)
        except (TypeError, ValueError) as exc:
            raise CorruptStore(f"{self.where}: {LEASE_KEY}: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise CorruptStore(f"{self.where}: {LEASE_KEY}: {raw!r:.200}")
        return raw

    def write(self, data: dict[str, Any]) -> None:
        client = self.engine.client
        with self.engine.guard():
            if not client.collection_exists(self.collection):
                params = models.VectorParams(size=1, distance=models.Distance.DOT)
                try:
                    client.create_collection(self.collection, vectors_config=params)
                except Exception:
                    if not client.collection_exists(self.collection):
                        raise
                    # made meanwhile by another claimant
            client.update_collection(self.collection, metadata={LEASE_KEY: json.dumps(data)})


def _copy_collection(client: QdrantClient, source: str, target: str) -> None:
    """Every point (vector and payload), the payload indexes and the store info."""
    info = client.get_collection(source)
    client.create_collection(
        target,
        vectors_config=info.config.params.vectors,
        hnsw_config=models.HnswConfigDiff(**info.config.hnsw_config.model_dump()),
    )
    for key, schema in (info.payload_schema or {}).items():
        client.create_payload_index(
            target, field_name=key, field_schema=schema.data_type, wait=True
        )
    metadata = info.config.metadata or {}
    if INFO_KEY in metadata:
        client.update_collection(target, metadata={INFO_KEY: metadata[INFO_KEY]})
    offset = None
    while True:
        points, offset = client.scroll(
            source, limit=COPY_PAGE, offset=offset, with_payload=True, with_vectors=True
        )
        if points:
            batch = [
                models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points
            ]
            client.upsert(target, points=batch, wait=True)
        if offset is None:
            return
