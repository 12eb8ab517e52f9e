"""Aliases of Pinecone namespaces (`pinecone://INDEX?namespace=NS`): a pointer record in
embedrec's reserved namespace (alias_record.py), the generations in namespaces `NS__gNNNN`.

A swap replaces the pointer record (one upsert of one record) and waits until a fetch shows
it. Pinecone has no lock and no compare-and-set: rebuilds hold a timed lease kept in a second
record beside the pointer (leases/timed.py), which also keeps the generation counter; a
rollback or a swap by hand is one writer per alias at a time.

A plain namespace NS that already holds records is adopted as `NS__g0000`: its records
(values and metadata, listed and fetched by id) and its store info are copied, the pointer
written, and only then are the originals deleted, so that every step leaves NS readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from embedrec.stores.errors import ConfigError, StoreLocked, StoreNotFound
from embedrec.stores.lifecycle import generations
from embedrec.stores.lifecycle import timed_lease as timed
from embedrec.stores.lifecycle.generations import ADOPTED, NAME, AliasState, Fingerprint, Generation
from embedrec.stores.lifecycle.leases import Holder, Lease, held
from embedrec.stores.pinecone.alias_record import (
    INFO_NAMESPACE,
    SEPARATOR,
    LeaseRecord,
    generation_namespace,
    read_alias,
    write_alias,
)
from embedrec.stores.pinecone.store import PineconeStore
from embedrec.stores.pinecone.wire import id_chunks, user_id
from embedrec.stores.uri import parse_uri

LIST_PAGE = 100
SETTLE_S = 2.0
"""A lease claim's settle time: longer than a claimant's read-to-visible write takes."""


class PineconeBook:
    def __init__(self, uri: str) -> None:
        parsed = parse_uri(uri)
        self.raw = parsed.raw
        self.namespace = parsed.options.get("namespace", "")
        if not self.namespace or SEPARATOR in self.namespace:
            raise ConfigError(
                f"{self.raw}: an alias is a namespace (?namespace=NS) without {SEPARATOR!r}"
            )
        self.store = PineconeStore.open(parsed, dim=None, metric=None, follow_alias=False)

    def close(self) -> None:
        self.store.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        return read_alias(self.store._call, self.store._index, self.namespace, self.raw)

    def _write(self, live: str, previous: list[str], step: str = "swap") -> None:
        pointer = {"live": live, "previous": [p for p in previous if p != live]}
        generations.reached(f"{step}:before-replace")
        write_alias(
            self.store._call,
            self.store._index,
            self.namespace,
            pointer,
            self.store.dim,
            self.store._flush_timeout,
        )
        generations.reached(f"{step}:after-replace")

    def _counts(self) -> dict[str, int]:
        """Vectors per generation namespace of this alias, as the index reports them."""
        stats = self.store._call("describe_index_stats", self.store._index.describe_index_stats)
        prefix = f"{self.namespace}{SEPARATOR}"
        out = {}
        for ns, summary in stats.namespaces.items():
            name = ns[len(prefix) :] if ns.startswith(prefix) else ""
            if NAME.fullmatch(name) and summary.vector_count:
                out[name] = int(summary.vector_count)
        return out

    def generation(self, name: str) -> Generation:
        generations.check_name(name)
        scheme, rest = self.raw.split(":", 1)
        location, _, query = rest.partition("?")
        pairs = [
            (k, generation_namespace(v, name) if k == "namespace" else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        return Generation(name, f"{scheme}:{location}?{urlencode(pairs)}")

    # -- reading ----------------------------------------------------------------------------

    def state(self) -> AliasState:
        pointer = self._read()
        live = pointer["live"] if pointer else None
        previous = pointer["previous"] if pointer else []
        return generations.alias_state(self.raw, self.generation, live, previous, self._counts())

    def live_token(self) -> str | None:
        pointer = self._read()
        return pointer["live"] if pointer else None

    def new_generation(self) -> Generation:
        pointer = self._read() or {"live": None, "previous": []}
        taken = [*self._counts(), *pointer["previous"], *filter(None, [pointer["live"]])]
        return self.generation(timed.reserve(self._record(), taken))

    # -- the rebuild lease ------------------------------------------------------------------

    def _record(self) -> LeaseRecord:
        store = self.store
        return LeaseRecord(
            store._call, store._index, self.namespace, store.dim, store._flush_timeout, self.raw
        )

    def rebuild_lease(
        self, *, wait: bool = False, say: Callable[[str], None] = lambda text: None
    ) -> contextlib.AbstractContextManager[Lease]:
        def claim(me: Holder) -> tuple[Lease | None, Holder | None]:
            return timed.TimedLease.claim(self._record(), me, settle=SETTLE_S)

        return held(claim, self.raw, wait=wait, say=say)

    def running(self) -> Holder | None:
        return timed.running(self._record())

    def fingerprint(self, generation: Generation) -> Fingerprint:
        """The namespace's count as the index reports it, and the sha256 of its store info."""
        name = generations.check_name(generation.name)
        with PineconeStore.open(parse_uri(generation.uri), dim=None, metric=None) as store:
            info = store.info.to_json() if store.info is not None else None
        text = json.dumps(info, sort_keys=True).encode()
        count = self._counts().get(name, 0)
        return Fingerprint(name, count, hashlib.sha256(text).hexdigest())

    # -- changing the pointer ---------------------------------------------------------------

    def swap(self, generation: Generation, expect: Fingerprint | None = None) -> AliasState:
        name = generations.check_name(generation.name)
        if expect is not None:
            generations.check_fingerprint(self.fingerprint(generation), expect, self.raw)
        if name not in self._counts():
            raise StoreNotFound(f"{generation.uri}: the namespace holds no records to swap in")
        pointer = self._read()
        if pointer is None or pointer["live"] != name:
            before = [pointer["live"], *pointer["previous"]] if pointer else []
            self._write(name, before)
        return self.state()

    def rollback(self) -> AliasState:
        pointer = self._read()
        if pointer is None or not pointer["previous"]:
            raise ConfigError(f"{self.raw} has no previous generation to roll back to")
        self._write(pointer["previous"][0], pointer["previous"][1:])
        return self.state()

    def drop(self, generation: Generation) -> None:
        name = generations.check_name(generation.name)
        pointer = self._read()
        if pointer is not None and pointer["live"] == name:
            raise ConfigError(f"{self.raw}: {name} is live; swap or roll back before dropping")
        holder = self.running()
        if holder is not None and holder.generation == name:
            raise StoreLocked(f"{self.raw}: {name} is being built by {holder.describe()}")
        if pointer is not None and name in pointer["previous"]:
            self._write(pointer["live"], [p for p in pointer["previous"] if p != name])
        elif name not in self._counts():
            raise StoreNotFound(f"{self.raw} has no generation {name}")
        with PineconeStore.open(parse_uri(generation.uri), dim=None, metric=None) as gone:
            gone.delete(filter={})
            gone._call(
                "delete", gone._index.delete, ids=[gone._info_id()], namespace=INFO_NAMESPACE
            )

    def _clear(self, namespace: str) -> None:
        index = self.store._index
        self.store._call("delete", index.delete, delete_all=True, namespace=namespace)

    def adopt(self) -> Generation | None:
        pointer = self._read()
        plain = self.store.count()
        if pointer is not None:
            if plain and ADOPTED in (pointer["live"], *pointer["previous"]):
                self._clear(self.namespace)  # finish an adoption cut short after its pointer
            return None
        if not plain:
            return None
        target = self.generation(ADOPTED)
        self._copy(target)
        generations.reached("adopt:copied")
        self._write(ADOPTED, [], "adopt")
        self._clear(self.namespace)
        return target

    def _copy(self, target: Generation) -> None:
        """The plain namespace's records and store info into `target`, then wait until the
        index shows them all."""
        source = self.store
        with PineconeStore.open(parse_uri(target.uri), dim=None, metric=None) as copy:
            copy.delete(filter={})  # a copy cut short: start it again
            token = None
            while True:
                page = source._call(
                    "list",
                    source._index.list_paginated,
                    namespace=self.namespace,
                    limit=LIST_PAGE,
                    pagination_token=token,
                )
                ids = [user_id(v.id) for v in page.vectors]
                for chunk in id_chunks(ids):
                    records = source.fetch(chunk)
                    vectors = [r.vector for r in records]
                    if records:
                        copy.upsert([r.id for r in records], vectors, [r.metadata for r in records])
                token = page.pagination.next if page.pagination is not None else None
                if not token:
                    break
            if source.info is not None:
                copy.set_info(source.info)
