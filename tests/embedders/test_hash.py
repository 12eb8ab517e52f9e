"""`hash:DIM`, the hashed bag-of-words embedder that benchmarks and tests use as a model that
costs nothing, found through the embedder registry."""

from __future__ import annotations

import random
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from embedrec.embedders import InputError, get_embedder
from embedrec.embedders.hash import _SPACE_LEADS, UNICODE_SPACE, HashEmbedder
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.rows import Row
from embedrec.ingestion.sources import Source
from embedrec.stores import open_store


def test_the_spec_gives_dim_and_a_name_per_dim() -> None:
    embedder = get_embedder("hash:16")
    assert isinstance(embedder, HashEmbedder)
    assert (embedder.dim, embedder.modality, embedder.name) == (16, "text", "hash-bow-16")
    assert get_embedder("hash").dim == 64
    for bad in ("hash:x", "hash:1", "hash:8?scale=2"):
        with pytest.raises(ValueError, match="hash"):
            get_embedder(bad)


def test_vectors_are_unit_bags_of_words() -> None:
    embedder = get_embedder("hash:32")
    v = embedder.embed(["Toy Story 1995", "story TOY 1995", "Heat", "", "a a"])
    assert v.shape == (5, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(v[0], v[1])  # order and case do not matter
    assert not np.allclose(v[0], v[2])
    with pytest.raises(InputError, match="item 1: expected text"):
        embedder.embed(["ok", b"bytes"])  # type: ignore[list-item]


def _word_by_word(texts: list[str], dim: int) -> np.ndarray:
    """The embedder's definition, a word at a time: each lower-cased word (str.split) adds
    +1 or -1 (its CRC-32's low bit) at position (CRC-32 >> 1) % dim; no word: one empty
    word; the sum L2-normalised, a zero sum made (1, 0, ...)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split() or [""]:
            code = zlib.crc32(word.encode("utf-8", "surrogateescape"))
            out[i, (code >> 1) % dim] += 1.0 if code & 1 else -1.0
        if not out[i].any():
            out[i, 0] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_batch_vectors_are_the_word_by_word_definition() -> None:
    """The batch is hashed in bulk; each vector stays what the definition gives, for
    Unicode whitespace, surrogates, case folding that changes length or depends on the
    next letter, NUL and empty texts."""
    texts = ["", "  ", "a a", "a\u3000b\xa0c", "x\x1cy", "caf\xe9 \udcff Ünï", "\tT  W\r"]
    texts += ["ﬁ İ ß", "a b a b", "Toy Story (1995): Animation|Children's|Comedy"]
    texts += ["ΟΔΟΣ ΣΑΣ", "Σ", "a\x00b", "\x00", "x \x00 y"]  # final sigma; NUL
    for dim in (2, 16, 64):
        embedder = get_embedder(f"hash:{dim}")
        for batch in (texts, texts[::-1] * 3, texts[:1], texts[4:5], texts[:10]):
            np.testing.assert_array_equal(embedder.embed(batch), _word_by_word(batch, dim))


def test_random_batches_are_the_word_by_word_definition() -> None:
    """Batches hashed whole (ASCII, other Unicode, Unicode whitespace) or text by text (a
    NUL in a text) against the definition, on random texts of awkward characters."""
    rng = random.Random(7)
    pool = [chr(i) for i in range(0x250)] + list("\u3000\xa0\u2028ΣσςİßﬁÜ\udcff\u0345\u2019")
    for _ in range(1500):
        batch = ["".join(rng.choices(pool, k=rng.randint(0, 10))) for _ in range(rng.randint(1, 9))]
        if rng.random() < 0.7:
            batch = [text.replace("\0", "") for text in batch]
        for dim in (2, 64):
            np.testing.assert_array_equal(HashEmbedder(dim).embed(batch), _word_by_word(batch, dim))


def _word_with_crc(target: int) -> str:
    """A word (lower-case, no space or NUL) whose UTF-8 has CRC-32 `target`: a prefix and 4
    bytes solved for, CRC-32 being affine over GF(2) in the bits of the last 4 bytes."""
    for k in range(1000):
        head = b"w%d" % k
        base = zlib.crc32(head + bytes(4))
        columns = [zlib.crc32(head + (1 << bit).to_bytes(4, "little")) ^ base for bit in range(32)]
        rows = list(zip(columns, (1 << bit for bit in range(32)), strict=True))
        want, solution = target ^ base, 0
        for pivot in range(32):  # Gaussian elimination on (column, the bits that make it)
            at = next(i for i in range(pivot, 32) if rows[i][0] >> pivot & 1)
            rows[pivot], rows[at] = rows[at], rows[pivot]
            for i in range(32):
                if i != pivot and rows[i][0] >> pivot & 1:
                    rows[i] = (rows[i][0] ^ rows[pivot][0], rows[i][1] ^ rows[pivot][1])
        for pivot in range(32):
            if want >> pivot & 1:
                solution ^= rows[pivot][1]
        raw = head + solution.to_bytes(4, "little")
        word = raw.decode("utf-8", "surrogateescape")
        if word.lower().split() == [word] and "\0" not in word and word.isprintable():
            assert zlib.crc32(raw) == target
            return word
    raise AssertionError("no word found")


def test_a_word_with_the_crc_of_the_batch_mark_is_a_word() -> None:
    word = _word_with_crc(zlib.crc32(b"\0"))  # the mark that joins a batch's texts
    batch = ["a", word, f"b {word} c", "", word]
    for dim in (2, 64):
        np.testing.assert_array_equal(HashEmbedder(dim).embed(batch), _word_by_word(batch, dim))


def test_the_unicode_whitespace_is_what_str_split_splits_on() -> None:
    others = [chr(i) for i in range(128, sys.maxunicode + 1)]
    spaces = {c for c in others if c.isspace()}
    assert {c for c in others if UNICODE_SPACE.fullmatch(c)} == spaces
    assert all(c.encode().startswith(_SPACE_LEADS) for c in spaces)


def test_the_same_text_gives_the_same_vector_in_another_process() -> None:
    code = "from embedrec.embedders import get_embedder as g\n"
    code += "print(g('hash:8').embed(['x y'])[0].tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(get_embedder("hash:8").embed(["x y"])[0].tolist())


def test_prepare_refuses_image_bytes() -> None:
    with pytest.raises(InputError, match="takes text"):
        get_embedder("hash:8").prepare(Row(2, "a", b"\x89PNG", {}))


def test_an_ingest_by_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "items.csv"
    path.write_text("id,title,year\n" + "".join(f"{i},Film {i},{1990 + i}\n" for i in range(30)))
    columns = ColumnMap(id="id", text="{title}", metadata=parse_metadata_spec("year:int"))
    uri = f"faiss:{tmp_path / 'store'}"
    first = ingest(Source(path, columns), uri, "hash:16")
    again = ingest(Source(path, columns), uri, "hash:16")
    assert (first.embedded, first.upserted, again.unchanged, again.embedded) == (30, 30, 30, 0)
    with open_store(uri) as store:
        assert store.count() == 30 and store.dim == 16
