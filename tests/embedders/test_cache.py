"""EmbeddingCache, content keys, embed_cached and the embedder factory (no real model)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from embedrec.common.vectors import l2_normalize
from embedrec.embedders import get_embedder
from embedrec.embedders.base import InputError
from embedrec.embedders.cache import MERGE_AFTER, EmbeddingCache, default_cache_dir
from embedrec.embedders.cached import cached_rows, content_key, content_keys, embed_cached
from embedrec.embedders.keyed import KEY, VectorBuffer, prefixes


class CountingEmbedder:
    """Deterministic vectors from a hash of the text; counts what it was asked to embed."""

    modality = "text"

    def __init__(self, name: str = "fake@1", dim: int = 8) -> None:
        self.name, self.dim = name, dim
        self.embedded: list[str] = []

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        for i, text in enumerate(batch):
            if text == "BAD":
                raise InputError(i, "bad text")
        self.embedded.extend(batch)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in batch]
        rows = [np.random.default_rng(s).standard_normal(self.dim) for s in seeds]
        return l2_normalize(np.array(rows), zero_rows="keep")


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    with EmbeddingCache(tmp_path / "emb") as c:
        yield c


def test_hits_embed_nothing(cache: EmbeddingCache) -> None:
    emb = CountingEmbedder()
    items = [f"item {i}" for i in range(50)]
    first, hits = embed_cached(emb, items, cache)
    assert hits == 0 and len(emb.embedded) == 50
    assert first.dtype == np.float32 and first.shape == (50, 8)
    emb.embedded.clear()
    again, hits = embed_cached(emb, items, cache)
    assert hits == 50 and emb.embedded == []
    np.testing.assert_array_equal(again, first)


def test_only_changed_items_are_embedded(cache: EmbeddingCache) -> None:
    emb = CountingEmbedder()
    embed_cached(emb, ["a", "b", "c"], cache)
    emb.embedded.clear()
    vectors, hits = embed_cached(emb, ["a", "B changed", "c", "a"], cache)
    assert hits == 3 and emb.embedded == ["B changed"]
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_allclose(vectors, CountingEmbedder().embed(["a", "B changed", "c", "a"]))


def test_duplicates_in_one_call_are_embedded_once(cache: EmbeddingCache) -> None:
    emb = CountingEmbedder()
    vectors, hits = embed_cached(emb, ["x", "y", "x", "x"], cache, chunk_size=1)
    assert hits == 0 and sorted(emb.embedded) == ["x", "y"]
    assert vectors.shape == (4, 8)


def test_new_items_across_chunks_come_back_in_order(cache: EmbeddingCache) -> None:
    """All new and distinct: the embedder's rows are returned as they are, chunk after chunk."""
    items = [f"item {i}" for i in range(50)]
    vectors, hits = embed_cached(CountingEmbedder(), items, cache, chunk_size=16)
    assert hits == 0 and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, CountingEmbedder().embed(items))
    np.testing.assert_array_equal(embed_cached(CountingEmbedder(), items, cache)[0], vectors)


def test_write_behind_buffers_are_looked_up_and_only_the_first_fills(
    cache: EmbeddingCache,
) -> None:
    """As the pipeline calls it: `caching` (being written) and `unwritten` (filling) are
    looked up before the cache; new vectors, duplicates in a batch once, go to `unwritten`."""
    emb, want = CountingEmbedder(), CountingEmbedder()
    unwritten, caching = VectorBuffer(), VectorBuffer()
    embed_cached(emb, ["a", "b", "a"], cache, unwritten=(caching,))
    assert (len(caching), emb.embedded) == (2, ["a", "b"])
    batch = ["b", "c", "c", "a", "d", "b"]
    vectors, hits = embed_cached(emb, batch, cache, unwritten=(unwritten, caching))
    assert hits == 3 and emb.embedded[2:] == ["c", "d"]
    assert (len(unwritten), len(caching), len(cache)) == (2, 2, 0)
    np.testing.assert_allclose(vectors, want.embed(batch), rtol=1e-6)
    cache.put_buffer(caching)  # the write ends: its keys are now in the cache
    again, hits = embed_cached(emb, ["d", "a", "e"], cache, unwritten=(VectorBuffer(), unwritten))
    assert hits == 2 and emb.embedded[4:] == ["e"] and len(cache) == 2
    np.testing.assert_allclose(again, want.embed(["d", "a", "e"]), rtol=1e-6)


def test_a_buffer_keeps_the_last_vector_of_a_key_and_grows(tmp_path: Path) -> None:
    keys = np.frombuffer(b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(3000)), KEY)
    rows = np.arange(3000 * 2, dtype=np.float32).reshape(3000, 2)
    buffer = VectorBuffer()
    for start in range(0, 3000, 700):  # past its first capacity
        buffer.add(keys[start : start + 700], rows[start : start + 700])
    buffer.add(keys[[5, 2999, 5]], -rows[:3])  # the last of key 5 wins
    assert len(buffer) == 3000
    at, found = buffer.find(keys[::-1], prefixes(keys[::-1]), 2)
    got = dict(zip((2999 - at).tolist(), map(tuple, found), strict=True))
    assert len(got) == 3000 and got[5] == (-4.0, -5.0) and got[2999] == (-2.0, -3.0)
    assert got[7] == (14.0, 15.0) and buffer.find(keys, prefixes(keys), 3)[0].size == 0
    stored = buffer.contents()[0]
    assert np.all(stored[1:] > stored[:-1]) and len(stored) == 3000
    with EmbeddingCache(tmp_path) as cache:
        cache.put_buffer(buffer)
        at, found = cache.find(keys, prefixes(keys), 2)
        np.testing.assert_array_equal(
            found[np.argsort(at)][[5, 7, 2999]], [[-4, -5], [14, 15], [-2, -3]]
        )
    with pytest.raises(ValueError, match="2-d vectors was given"):
        buffer.add(keys[:1], np.zeros((1, 3), dtype=np.float32))


def test_a_reader_sees_what_another_connection_wrote_after_it_looked(tmp_path: Path) -> None:
    """A lookup that the reader answers without a transaction (its segments hold none of
    the keys) still finds what was written since it loaded them."""
    keys = np.frombuffer(b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(40)), KEY)
    vectors = np.arange(80, dtype=np.float32).reshape(40, 2)
    with EmbeddingCache(tmp_path) as reader, EmbeddingCache(tmp_path) as writer:
        writer.put(keys[:10], vectors[:10])
        assert len(reader.find(keys, prefixes(keys), 2)[0]) == 10
        for _ in range(2):  # answered from memory: nothing written since
            assert reader.find(keys[10:], prefixes(keys[10:]), 2)[0].size == 0
        writer.put(keys[10:], vectors[10:])
        at, found = reader.find(keys[10:], prefixes(keys[10:]), 2)
        np.testing.assert_array_equal(found[np.argsort(at)], vectors[10:])


def test_a_new_cache_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "embeddings.sqlite3") as db:  # as earlier versions made it
        db.execute("CREATE TABLE vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
    for root, page in ((tmp_path / "new", 16384), (old, 4096)):
        with EmbeddingCache(root) as c:
            embed_cached(CountingEmbedder(), ["a", "b"], c)
            assert c._db.execute("PRAGMA page_size").fetchone()[0] == page
        with EmbeddingCache(root) as c:
            assert len(c) == 2 and embed_cached(CountingEmbedder(), ["a", "b"], c)[1] == 2


def test_cache_persists_and_is_keyed_by_embedder_name(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path) as c:
        embed_cached(CountingEmbedder("model@v1"), ["hello"], c)
    with EmbeddingCache(tmp_path) as c:
        same, other = CountingEmbedder("model@v1"), CountingEmbedder("model@v2")
        assert embed_cached(same, ["hello"], c)[1] == 1 and same.embedded == []
        assert embed_cached(other, ["hello"], c)[1] == 0 and other.embedded == ["hello"]
        assert len(c) == 2


def test_error_names_the_original_position(cache: EmbeddingCache) -> None:
    emb = CountingEmbedder()
    embed_cached(emb, ["a", "b"], cache)
    with pytest.raises(InputError, match="item 3: bad text") as info:
        embed_cached(emb, ["a", "b", "new", "BAD"], cache)
    assert info.value.index == 3


def test_empty_input(cache: EmbeddingCache) -> None:
    vectors, hits = embed_cached(CountingEmbedder(), [], cache)
    assert vectors.shape == (0, 8) and hits == 0


def test_content_keys(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG fake")
    assert content_key("m", "text") == content_key("m", "text")
    assert content_key("m", "text") != content_key("m2", "text")
    assert content_key("m", "a") != content_key("m", "b")
    # an image given by path and by its bytes is the same content
    assert content_key("m", str(png), "image") == content_key("m", png.read_bytes(), "image")
    key = content_key("m", png, "image")
    png.write_bytes(b"\x89PNG changed")
    assert content_key("m", png, "image") != key
    a = np.zeros((2, 3), np.uint8)
    assert content_key("m", a, "image") != content_key("m", a.reshape(3, 2), "image")
    assert content_key("m", {"b": 1, "a": [2]}, "item") == content_key("m", {"a": [2], "b": 1})
    with pytest.raises(InputError, match=r"item 4: file '.*missing\.png' not found"):
        content_key("m", str(tmp_path / "missing.png"), "image", index=4)
    items = [str(png), b"raw", a, {"b": 1}]
    assert content_keys("m", items, "image") == [
        content_key("m", item, "image", i) for i, item in enumerate(items)
    ]
    with pytest.raises(InputError, match=r"item 1: file '.*missing\.png' not found"):
        content_keys("m", [str(png), str(tmp_path / "missing.png")], "image")
    texts = ["a", "caf\xe9", "", "a"]  # all text: hashed without a call per item, the same keys
    assert content_keys("m", texts) == [content_key("m", t) for t in texts]
    defined = [hashlib.sha256(b"m\0text\0" + t.encode()).hexdigest() for t in texts]
    assert content_keys("m", texts) == defined  # what caches already written are keyed by
    assert content_keys("m", ["a", 1]) == [content_key("m", "a"), content_key("m", 1)]
    with pytest.raises(InputError, match=r"item 2: text is not valid Unicode"):
        content_keys("m", ["a", "b", "caf\ud800"])


def test_unreadable_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "embeddings.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"embedding cache .* is unreadable"):
        EmbeddingCache(tmp_path)


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
    monkeypatch.delenv("EMBEDREC_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "embedrec" / "embeddings"


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from embedrec.embedders.cache import EmbeddingCache
    from tests.embedders.test_cache import batch_keys
    cache = EmbeddingCache(sys.argv[1])
    rng = np.random.default_rng(0)
    for batch in range(10_000):
        cache.put(batch_keys(batch), rng.standard_normal((2000, 64)))
        print(batch, flush=True)
    """
)


def batch_keys(batch: int, n: int = 2000) -> np.ndarray:
    """The digests the kill -9 writer puts in `batch`."""
    return np.array([hashlib.sha256(f"b{batch}-{i}".encode()).digest() for i in range(n)], "S32")


def _held(cache: EmbeddingCache, digests: np.ndarray, dim: int = 64) -> int:
    return len(cache.find(digests, prefixes(digests), dim)[0])


def test_kill_9_mid_write_leaves_whole_batches(tmp_path: Path) -> None:
    """A writer killed with SIGKILL while writing (segments merging as it goes): every
    batch is present whole or not at all, the file passes SQLite's integrity check, and a
    reader ran alongside throughout."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        reader_hits = 0
        with EmbeddingCache(tmp_path) as reader:  # one reader throughout: it sees merges
            for line in proc.stdout:
                batch = int(line)
                reader_hits += _held(reader, batch_keys(batch))
                if batch >= 11:
                    break
        proc.kill()  # SIGKILL, most likely inside the next transaction
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    assert reader_hits == 12 * 2000
    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM segments").fetchone()[0] <= MERGE_AFTER  # merged
    db.close()
    with EmbeddingCache(tmp_path) as cache:
        total = len(cache)
        assert total % 2000 == 0 and total >= 12 * 2000
        for batch in range(total // 2000):
            assert _held(cache, batch_keys(batch)) == 2000


_RACER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from embedrec.embedders.cache import EmbeddingCache
    from tests.embedders.test_cache import batch_keys
    cache = EmbeddingCache(sys.argv[1])
    for batch in range(int(sys.argv[2]), 40, 2):
        cache.put(batch_keys(batch, 500), np.full((500, 64), batch, dtype=np.float32))
    """
)


def test_two_processes_writing_at_once_both_land(tmp_path: Path) -> None:
    """Two writers put alternate batches at once (merging as they go): every batch of
    both is there whole, with its own vectors."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), str(first)], cwd=Path(__file__).parents[2]
        )
        for first in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with EmbeddingCache(tmp_path) as cache:
        assert len(cache) == 40 * 500
        for batch in range(40):
            digests = batch_keys(batch, 500)
            at, rows = cache.find(digests, prefixes(digests), 64)
            assert len(at) == 500 and np.all(rows == batch)
    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    assert db.execute("SELECT count(*) FROM segments").fetchone()[0] <= MERGE_AFTER
    db.close()


def test_merges_keep_the_newest_vector_and_a_reader_follows_them(tmp_path: Path) -> None:
    keys = batch_keys(0, 100)
    with EmbeddingCache(tmp_path) as cache, EmbeddingCache(tmp_path) as reader:
        for round_ in range(3 * MERGE_AFTER):
            part = keys[(round_ * 7) % 100 :][:30]
            cache.put(part, np.full((len(part), 4), round_, dtype=np.float32))
            at, rows = reader.find(part, prefixes(part), 4)  # loaded before the next merge
            assert len(at) == len(part) and np.all(rows == round_)
        newest = {}
        for round_ in range(3 * MERGE_AFTER):
            newest |= dict.fromkeys(
                range((round_ * 7) % 100, min(100, (round_ * 7) % 100 + 30)), round_
            )
        at, rows = reader.find(keys, prefixes(keys), 4)
        assert sorted(at.tolist()) == sorted(newest)
        assert {int(i): float(r[0]) for i, r in zip(at, rows, strict=True)} == newest
        assert len(reader._segments) <= MERGE_AFTER
        assert reader.find(keys, prefixes(keys), 8)[0].size == 0  # another width: not held


def test_keys_alike_in_their_first_64_bits_are_told_apart(tmp_path: Path) -> None:
    raw = [bytes(8) + bytes([i]) * 24 for i in (3, 1, 2)] + [b"\x01" * 32]
    digests = np.frombuffer(b"".join(raw), dtype=KEY)
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2)
    buffer = VectorBuffer()
    buffer.add(digests[:2], vectors[:2])
    with EmbeddingCache(tmp_path) as cache:
        cache.put(digests[1:], vectors[1:] + 100)
        wanted = digests[[2, 0, 3, 1]]
        at, rows = cached_rows(cache, wanted, 2, (buffer,))
        got = {int(i): tuple(r) for i, r in zip(at, rows, strict=True)}
        assert got == {0: (104.0, 105.0), 1: (0.0, 1.0), 2: (106.0, 107.0), 3: (2.0, 3.0)}
        missing = np.frombuffer(bytes(8) + b"\x09" * 24, dtype=KEY)
        assert cached_rows(cache, missing, 2, (buffer,))[0].size == 0


def test_a_cache_of_the_old_format_is_still_read(tmp_path: Path) -> None:
    items = ["a", "b", "c"]
    emb = CountingEmbedder()
    old = CountingEmbedder().embed(items).astype("<f4")
    with sqlite3.connect(tmp_path / "embeddings.sqlite3") as db:  # as earlier versions wrote it
        db.execute("CREATE TABLE vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        keys = content_keys(emb.name, items)
        db.executemany(
            "INSERT INTO vectors VALUES (?, ?)",
            [(k, v.tobytes()) for k, v in zip(keys, old, strict=True)],
        )
    with EmbeddingCache(tmp_path) as cache:
        vectors, hits = embed_cached(emb, ["b", "new", "a"], cache)
        assert hits == 2 and emb.embedded == ["new"]
        np.testing.assert_array_equal(vectors[[0, 2]], old[[1, 0]])
        assert len(cache) == 4 and set(cache.get_many(keys)) == set(keys)


@pytest.mark.parametrize(
    ("keys", "vectors", "reason"),
    [
        (b"x" * 33, b"", "segment 1 is corrupt \\(33 bytes of keys"),
        (b"b" * 32 + b"a" * 32, bytes(16), "segment 1 is corrupt \\(its keys are not sorted"),
        (b"a" * 32, bytes(4), "segment 1 is corrupt \\(4 bytes of vectors"),
    ],
)
def test_a_corrupt_segment_is_a_clear_error(
    tmp_path: Path, keys: bytes, vectors: bytes, reason: str
) -> None:
    EmbeddingCache(tmp_path).close()
    with sqlite3.connect(tmp_path / "embeddings.sqlite3") as db:
        db.execute("INSERT INTO segments (dim, keys, vectors) VALUES (2, ?, ?)", (keys, vectors))
    with EmbeddingCache(tmp_path) as cache:
        digests = np.frombuffer(keys[:32], dtype=KEY)
        name = str(tmp_path / "embeddings.sqlite3")
        with pytest.raises(ValueError, match=f"embedding cache {name} is unreadable: {reason}"):
            cache.find(digests, prefixes(digests), 2)


def test_factory_resolves_plugin_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = types.ModuleType("embedrec.embedders.fake_tower")
    plugin.from_spec = lambda arg, **kw: CountingEmbedder(name=f"tower:{arg}", **kw)
    monkeypatch.setitem(sys.modules, "embedrec.embedders.fake_tower", plugin)
    emb = get_embedder("fake-tower:/models/t.pt", dim=4)
    assert emb.name == "tower:/models/t.pt" and emb.dim == 4
    emb = get_embedder("fake-tower:t.pt?dim=16")
    assert emb.dim == 16  # options in the spec reach the constructor, digits as ints
    with pytest.raises(ValueError, match=r"spec 'fake-tower:t\.pt\?dim=16' and keywords both"):
        get_embedder("fake-tower:t.pt?dim=16", dim=4)
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        get_embedder("fake-tower:t.pt?colour=red")
    with pytest.raises(ValueError, match="options must be KEY=VALUE"):
        get_embedder("fake-tower:t.pt?dim")
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        get_embedder("nope")
    with pytest.raises(ValueError, match="bad embedder spec"):
        get_embedder("../etc:x")
