"""Aliases and generations on every backend that runs here: FAISS and qdrant+edge (pointer
file), qdrant+local (Qdrant's collection aliases), Pinecone (a pointer record, against the
loopback); a Qdrant server runs the same suite when Docker or QDRANT_URL is there. Then the
hostile cases: a damaged pointer is a `CorruptStore` naming it, never a silent fallback."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from embedrec.stores import (
    AliasBusy,
    ConfigError,
    CorruptStore,
    GenerationChanged,
    StoreInfo,
    StoreLocked,
    StoreNotFound,
    open_existing,
    open_store,
)
from embedrec.stores.lifecycle.aliases import Generation, alias_book
from embedrec.stores.pinecone.alias_record import INFO_NAMESPACE, alias_id
from embedrec.testing.pinecone_loopback import LoopbackPinecone
from tests.stores.test_qdrant_server import Server, collection_for, server  # noqa: F401

DIM = 4
INFO = StoreInfo(
    embedder="hash", embedder_name="test-hash", dim=DIM, modality="text", metric="cosine"
)


def fill(uri: str, ids: list[str], *, tag: str) -> None:
    """A store at `uri` holding `ids`, each with metadata naming `tag`, described by INFO."""
    rng = np.random.default_rng(len(ids))
    with open_store(uri, dim=DIM) as store:
        store.upsert(ids, rng.standard_normal((len(ids), DIM)), [{"tag": tag}] * len(ids))
        store.set_info(INFO)


def contents(uri: str) -> tuple[int, set[str]]:
    with open_existing(uri) as store:
        hits = store.search(np.ones(DIM), 50)[0]
        return store.count(), {str(m["tag"]) for m in hits.metadata}


class AliasSuite:
    """The alias book's contract, run on each backend's `alias_uri`."""

    one_client_per_folder = False

    def alias_uri(self, tmp_path: Path) -> str:
        raise NotImplementedError

    def test_a_plain_store_is_adopted_and_a_swap_and_rollback_follow(self, tmp_path: Path) -> None:
        uri = self.alias_uri(tmp_path)
        fill(uri, ["a", "b", "c"], tag="plain")
        book = alias_book(uri)
        assert book.live_token() is None and book.state().live is None
        adopted = book.adopt()
        assert adopted is not None and adopted.name == "g0000"
        assert book.adopt() is None  # once
        assert book.live_token() == "g0000"
        assert contents(uri) == (3, {"plain"})  # nothing lost, through the alias
        with open_existing(uri) as store:
            assert store.info == INFO

        new = book.new_generation()
        assert new.name == "g0001" and book.live_token() == "g0000"  # not live yet
        fill(new.uri, ["x", "y"], tag="new")
        with open_existing(uri) as pinned:
            if self.one_client_per_folder:  # qdrant-client's local mode: not while it is open
                with pytest.raises(StoreLocked, match="one client per folder"):
                    book.swap(new)
            else:
                book.swap(new)
                assert pinned.count() == 3  # a handle stays on the generation it opened
        state = book.swap(new)
        assert book.live_token() == "g0001"
        assert state.live == new and [g.name for g in state.previous] == ["g0000"]
        assert contents(uri) == (2, {"new"})

        state = book.rollback()
        assert state.live is not None and state.live.name == "g0000"
        assert state.previous == () and [g.name for g in state.unlisted] == ["g0001"]
        assert book.live_token() == "g0000" and contents(uri) == (3, {"plain"})
        with pytest.raises(ConfigError, match="no previous generation"):
            book.rollback()

    def test_drop_refuses_the_live_one_and_forgets_a_previous_one(self, tmp_path: Path) -> None:
        uri = self.alias_uri(tmp_path)
        book = alias_book(uri)
        first = book.new_generation()
        fill(first.uri, ["a"], tag="one")
        assert book.swap(first).previous == ()  # an alias made from nothing
        second = book.new_generation()
        assert second.name == "g0002"
        fill(second.uri, ["a", "b"], tag="two")
        book.swap(second)
        with pytest.raises(ConfigError, match="is live"):
            book.drop(second)
        book.drop(first)
        state = book.state()
        assert state.live == second and state.previous == () and state.unlisted == ()
        with pytest.raises(StoreNotFound):
            book.drop(first)
        with pytest.raises(StoreNotFound):
            book.swap(book.generation("g0007"))  # nothing there to point at
        assert contents(uri) == (2, {"two"})

    def test_one_rebuild_lease_at_a_time_keeps_what_it_builds(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A second claim is refused naming the first; the generation the holder builds
        cannot be dropped while it holds the lease; a name is never handed out twice."""
        monkeypatch.setattr("embedrec.stores.pinecone.aliases.SETTLE_S", 0.1)
        uri = self.alias_uri(tmp_path)
        book = alias_book(uri)
        with book.rebuild_lease() as lease:
            building = book.new_generation()
            lease.building(building.name)
            fill(building.uri, ["a"], tag="one")
            other = alias_book(uri)
            busy = rf"being rebuilt by pid {os.getpid()} on .*, started 20.*building g0001"
            with pytest.raises(AliasBusy, match=busy), other.rebuild_lease():
                pass
            running = other.running()
            assert running is not None and running.generation == "g0001"
            with pytest.raises(StoreLocked, match="g0001 is being built by pid"):
                other.drop(building)
        assert book.running() is None
        book.drop(building)  # abandoned now
        assert book.new_generation().name == "g0002"  # g0001 is gone, its name not reused

    def test_a_swap_refuses_a_generation_changed_since_it_was_validated(
        self, tmp_path: Path
    ) -> None:
        uri = self.alias_uri(tmp_path)
        book = alias_book(uri)
        generation = book.new_generation()
        fill(generation.uri, ["a", "b"], tag="one")
        validated = book.fingerprint(generation)
        assert validated.count == 2
        with open_existing(generation.uri) as store:
            store.upsert(["c"], np.ones((1, DIM)))
        with pytest.raises(GenerationChanged, match="is not the one validated"):
            book.swap(generation, validated)
        assert book.live_token() is None
        book.swap(generation, book.fingerprint(generation))
        assert book.live_token() == generation.name

    def test_a_generation_name_is_checked(self, tmp_path: Path) -> None:
        book = alias_book(self.alias_uri(tmp_path))
        for bad in ("0003", "g3", "g0003/..", "../g0003"):
            with pytest.raises(ConfigError, match="not a generation name"):
                book.generation(bad)


class TestFaissAliases(AliasSuite):
    def alias_uri(self, tmp_path: Path) -> str:
        return f"faiss:{tmp_path / 'movies'}?index=HNSW32"


class TestEdgeAliases(AliasSuite):
    def alias_uri(self, tmp_path: Path) -> str:
        return f"qdrant+edge:{tmp_path / 'movies'}"


class TestQdrantLocalAliases(AliasSuite):
    one_client_per_folder = True

    def alias_uri(self, tmp_path: Path) -> str:
        return f"qdrant+local:{tmp_path / 'qdrant'}/movies"


class TestPineconeAliases(AliasSuite):
    loopback: ClassVar[LoopbackPinecone]

    @pytest.fixture(autouse=True)
    def _loopback(self, monkeypatch: pytest.MonkeyPatch) -> object:
        loopback = LoopbackPinecone()
        monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", loopback.url)
        monkeypatch.setenv("PINECONE_HOST", "")
        type(self).loopback = loopback
        yield
        loopback.close()
        assert loopback.violations == []

    def alias_uri(self, tmp_path: Path) -> str:
        name = "t-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
        open_store(f"pinecone://{name}?create=1", dim=DIM).close()
        return f"pinecone://{name}?namespace=prod"


@pytest.mark.docker
class TestQdrantServerAliases(AliasSuite):
    @pytest.fixture(autouse=True)
    def _server(self, server: Server) -> None:  # noqa: F811
        self.server = server

    def alias_uri(self, tmp_path: Path) -> str:
        return self.server.uri(collection_for(tmp_path))


def test_qdrant_memory_has_no_aliases() -> None:
    with pytest.raises(ConfigError, match="no aliases"):
        alias_book("qdrant+memory:movies")


# -- hostile pointers ------------------------------------------------------------------------


@pytest.fixture
def faiss_alias(tmp_path: Path) -> tuple[str, Path]:
    uri = f"faiss:{tmp_path / 'movies'}"
    book = alias_book(uri)
    first = book.new_generation()
    fill(first.uri, ["a"], tag="one")
    book.swap(first)
    return uri, tmp_path / "movies" / "alias.json"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "unreadable"),
        ('["g0001"]', "not an alias pointer"),
        ('{"format": 1, "live": "../elsewhere", "previous": []}', "not a generation name"),
        ('{"format": 1, "live": "g0001", "previous": "g0000"}', "not a list"),
        ('{"format": 1, "live": "g0009", "previous": []}', "holds no faiss store"),
    ],
)
def test_a_damaged_pointer_file_is_corrupt_naming_it(
    faiss_alias: tuple[str, Path], text: str, says: str
) -> None:
    uri, pointer = faiss_alias
    pointer.write_text(text)
    for attempt in (
        lambda: open_existing(uri),
        lambda: alias_book(uri).state(),
        lambda: alias_book(uri).swap(Generation("g0001", uri)),
    ):
        with pytest.raises(CorruptStore, match=says) as caught:
            attempt()
        assert str(pointer) in str(caught.value)


def test_a_live_generation_deleted_by_hand_is_corrupt_not_a_fallback(
    faiss_alias: tuple[str, Path],
) -> None:
    uri, pointer = faiss_alias
    book = alias_book(uri)
    second = book.new_generation()
    fill(second.uri, ["b"], tag="two")
    book.swap(second)
    for name in ("manifest.json",):
        (pointer.parent / second.name / name).unlink()
    with pytest.raises(CorruptStore, match=r"live generation g0002.*holds no faiss store"):
        open_existing(uri)  # never g0001 silently


def test_a_damaged_pinecone_alias_record_is_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback = LoopbackPinecone()
    try:
        monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", loopback.url)
        monkeypatch.setenv("PINECONE_HOST", "")
        uri = "pinecone://damaged?namespace=prod"
        with open_store("pinecone://damaged?create=1&namespace=elsewhere", dim=DIM) as store:
            bad = {"alias": json.dumps({"format": 1, "live": "g1", "previous": []})}
            item = {"id": alias_id("prod"), "values": [1.0, 0, 0, 0], "metadata": bad}
            store._index.upsert(vectors=[item], namespace=INFO_NAMESPACE)
        with pytest.raises(CorruptStore, match=alias_id("prod")):
            open_existing(uri)
    finally:
        loopback.close()


def test_a_kill_during_adoption_leaves_the_plain_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut after the copy, before the pointer: the plain store still opens as before, and
    adopting again finishes the job."""
    uri = f"faiss:{tmp_path / 'movies'}"
    fill(uri, ["a", "b"], tag="plain")

    def cut(point: str) -> None:
        if point == "adopt:copied":
            raise KeyboardInterrupt(point)

    monkeypatch.setattr("embedrec.stores.lifecycle.generations.reached", cut)
    with pytest.raises(KeyboardInterrupt):
        alias_book(uri).adopt()
    assert alias_book(uri).live_token() is None and contents(uri) == (2, {"plain"})
    monkeypatch.undo()
    assert alias_book(uri).adopt() is not None
    assert contents(uri) == (2, {"plain"}) and not (tmp_path / "movies" / "manifest.json").exists()


def test_a_qdrant_alias_that_is_not_ours_or_is_damaged_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    uri = f"qdrant+local:{folder}/movies"
    book = alias_book(uri)
    first = book.new_generation()
    fill(first.uri, ["a"], tag="one")
    book.swap(first)
    client = QdrantClient(path=str(folder))
    try:
        client.update_collection("movies__g0001", metadata={"embedrec_alias": "{not json"})
    finally:
        client.close()
    with pytest.raises(CorruptStore, match=r"movies__g0001.*embedrec_alias"):
        book.state()
    client = QdrantClient(path=str(folder))
    try:
        params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        client.create_collection("theirs", vectors_config=params)
        delete = models.DeleteAlias(alias_name="movies")
        create = models.CreateAlias(collection_name="theirs", alias_name="movies")
        client.update_collection_aliases(
            change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=delete),
                models.CreateAliasOperation(create_alias=create),
            ]
        )
    finally:
        client.close()
    with pytest.raises(ConfigError, match="'theirs', which is not a generation embedrec made"):
        book.live_token()
