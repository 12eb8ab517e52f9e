"""A FAISS store's metadata in columns: what goes in comes out (types included), filters over
the columns agree with the reference evaluator, the columns file survives a reopen and is
checked on it, and a store written by the previous format (JSON lines) still opens and is
converted by its next save."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedrec import CorruptStore, matches, open_store
from embedrec.stores.batch_checks import IdKeys, plain_columns
from embedrec.stores.faiss.columns import Field, MetaColumns, Vocab
from embedrec.stores.faiss.columns_file import write_arrays
from embedrec.stores.faiss.persistence import file_crc32
from tests.stores.conformance import random_metadata

FORMAT_1 = Path(__file__).parent / "data" / "faiss_format1"
"""Written by embedrec at 05d606d (format 1): HNSW16, 4-d, l2, ten records r0..r9 with r3
deleted (a dead slot, null in metadata.2.jsonl)."""

FILTERS = [
    {"genre": "Drama"},
    {"genre": {"$ne": "Drama"}},
    {"genre": 5},
    {"tags": "b"},
    {"tags": {"$nin": ["a"]}},
    {"year": {"$gte": 1994}},
    {"year": 2001},
    {"new": True},
    {"new": 1},
    {"score": {"$exists": True}},
    {"$or": [{"genre": "Ünïcode ✓"}, {"year": {"$lt": 1991}}]},
]


def _format_1_rows() -> dict[str, dict]:
    ids = json.loads((FORMAT_1 / "ids.2.json").read_text())
    lines = (FORMAT_1 / "metadata.2.jsonl").read_text(encoding="utf-8").splitlines()
    return {i: json.loads(line) for i, line in zip(ids, lines, strict=True) if i is not None}


def _same_typed(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_against(store, rows: dict[str, dict]) -> None:
    fetched = {r.id: r.metadata for r in store.fetch(list(rows))}
    assert fetched.keys() == rows.keys()
    for rid, meta in rows.items():
        assert _same_typed(fetched[rid], meta), (rid, fetched[rid], meta)  # 1 stays int, 1.0 float
    for flt in FILTERS:
        expected = {rid for rid, meta in rows.items() if matches(meta, flt)}
        assert store.count(flt) == len(expected), flt
        hits = store.search(np.zeros(4, np.float32), len(rows), filter=flt)[0]
        assert {h.id for h in hits} == expected, flt
        assert all(_same_typed(h.metadata, rows[h.id]) for h in hits)


def test_a_format_1_store_opens_and_its_next_save_converts_it(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(FORMAT_1, path)
    rows = _format_1_rows()
    assert len(rows) == 9 and "r3" not in rows
    store = open_store(f"faiss:{path}")
    _check_against(store, rows)
    store.upsert(["n1"], np.ones((1, 4), np.float32), [{"genre": "Drama", "tags": ["b"]}])
    store.close()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == 3 and manifest["files"]["metadata"]["file"].endswith(".cols")
    assert not list(path.glob("*.jsonl")) and not list(path.glob("ids.*.json"))
    rows["n1"] = {"genre": "Drama", "tags": ["b"]}
    _check_against(open_store(f"faiss:{path}"), rows)


@pytest.mark.parametrize("kind", ["Flat", "HNSW16"])
def test_columns_round_trip_through_writes_deletes_and_reopen(tmp_path, kind):
    rng = np.random.default_rng(5)
    meta = random_metadata(rng, 300)
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index={kind}&metric=l2", dim=4)
    vectors = rng.standard_normal((300, 4)).astype(np.float32)
    ids = [f"i{n}" for n in range(300)]
    for start in range(0, 300, 70):  # several appends, the columns growing
        store.upsert(ids[start : start + 70], vectors[start : start + 70], meta[start : start + 70])
    rows = dict(zip(ids, meta, strict=True))
    store.delete(ids[::9])
    for rid in ids[::9]:
        del rows[rid]
    store.upsert(ids[1:40:3], vectors[1:40:3], [{"genre": "x", "tags": ["t"]}] * 13)
    rows.update({rid: {"genre": "x", "tags": ["t"]} for rid in ids[1:40:3]})
    store.close()
    again = open_store(f"faiss:{path}")
    fetched = {r.id: r.metadata for r in again.fetch(list(rows))}
    assert all(_same_typed(fetched[r], m) for r, m in rows.items())
    for flt in [
        {"genre": "x"},
        {"tags": {"$in": ["t", "sale"]}},
        {"year": {"$lt": 2000}},
        {"code": "1"},
        {"code": 1},
        {"in_stock": False},
        {"price": {"$exists": False}},
    ]:
        assert again.count(flt) == sum(matches(m, flt) for m in rows.values()), flt
    again.upsert(["late"], np.ones((1, 4), np.float32), [{"genre": "late", "year": 3}])
    assert again.count({"genre": "late"}) == 1 and again.count() == len(rows) + 1


def test_hits_read_later_see_the_search_moment_across_a_compaction():
    store = open_store("faiss:?index=Flat&metric=l2", dim=2)
    store.upsert(["a", "b"], np.eye(2), [{"g": "one", "tags": ["x"]}, {"g": "two"}])
    hits = store.search(np.eye(2)[0], 2)[0]
    store.delete(["a"])
    store.upsert(["b", "c"], np.eye(2), [{"g": "three"}, {"g": "four"}])
    store.flush()  # a Flat store compacts: new columns, renumbered slots
    assert [dict(h.metadata) for h in hits] == [{"g": "one", "tags": ["x"]}, {"g": "two"}]


def _rewrite(path: Path, mutate) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    file = path / manifest["files"]["metadata"]["file"]
    data = bytearray(file.read_bytes())
    mutate(data)
    file.write_bytes(bytes(data))
    manifest["files"]["metadata"].update(bytes=len(data), crc32=file_crc32(file))
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.__setitem__(slice(0, 8), b"NOTCOLS!"), "not a readable column file"),
        (lambda d: d.__delitem__(slice(len(d) - 64, len(d))), "runs past the end"),
        (
            lambda d: d.__setitem__(
                slice(d.index(b'"rows": 3'), d.index(b'"rows": 3') + 9), b'"rows": 2'
            ),
            "holds 2 rows",
        ),
    ],
)
def test_a_damaged_columns_file_is_corrupt_even_when_its_checksum_matches(
    tmp_path, mutate, message
):
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index=Flat", dim=2)
    store.upsert(["a", "b", "c"], np.eye(2)[[0, 1, 0]], [{"g": "x"}, {"g": "y", "t": ["z"]}, {}])
    store.close()
    _rewrite(path, mutate)
    with pytest.raises(CorruptStore, match=message):
        open_store(f"faiss:{path}")


def test_string_codes_outside_the_dictionary_are_corrupt(tmp_path):
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index=Flat", dim=2)
    store.upsert(["a", "b"], np.eye(2), [{"g": "x"}, {"g": "y"}])
    store.close()

    def bad_code(data: bytearray) -> None:
        header = json.loads(data[16 : 16 + int.from_bytes(data[8:16], "little")])
        start = -(-(16 + int.from_bytes(data[8:16], "little")) // 64) * 64
        at = start + header["arrays"]["0.code"]["offset"]
        data[at : at + 4] = (7).to_bytes(4, "little")

    _rewrite(path, bad_code)
    with pytest.raises(CorruptStore, match="string codes outside the dictionary"):
        open_store(f"faiss:{path}")


def test_ids_found_through_colliding_hashes(monkeypatch):
    """Every id hashing alike (a worst case of the id index's 64-bit hashes): lookups still
    confirm each candidate against the id itself."""

    def alike(cls, ids):
        return cls(np.zeros(len(ids), np.int64), np.arange(len(ids)))

    monkeypatch.setattr(IdKeys, "of", classmethod(alike))
    store = open_store("faiss:?index=Flat&metric=l2", dim=2)
    for start in range(0, 40, 8):  # several runs, merged
        store.upsert([f"k{n}" for n in range(start, start + 8)], np.ones((8, 2)))
    store.upsert(["k3", "k30"], np.zeros((2, 2)), [{"again": True}] * 2)
    store.delete(["k5"])
    assert store.count() == 39
    assert [r.id for r in store.fetch(["k30", "k5", "k3", "nope"])] == ["k30", "k3"]
    assert store.fetch(["k3"])[0].metadata == {"again": True}
    hits = store.search(np.zeros(2), 5, exclude=[frozenset({"k3"})])[0]
    assert hits.ids[0] == "k30"


def test_an_id_saved_twice_is_corrupt(tmp_path):
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index=Flat", dim=2)
    store.upsert(["a", "b"], np.eye(2))
    store.close()
    manifest = json.loads((path / "manifest.json").read_text())
    ids_file = path / manifest["files"]["ids"]["file"]
    packed = {"data": np.frombuffer(b"aa", np.uint8), "offsets": np.arange(3, dtype=np.int64)}
    write_arrays(ids_file, packed, {"slots": 2})
    manifest["files"]["ids"].update(bytes=ids_file.stat().st_size, crc32=file_crc32(ids_file))
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptStore, match="id 'a' is held by two slots"):
        open_store(f"faiss:{path}").fetch(["a"])


def test_an_append_that_fails_part_way_leaves_nothing_behind(monkeypatch):
    columns = MetaColumns.of_rows([{"a": "x"}])
    real = Field.put

    def failing(field, start, column):
        if column.values == ["late"]:
            raise MemoryError("out of memory")
        real(field, start, column)

    monkeypatch.setattr(Field, "put", failing)
    with pytest.raises(MemoryError):
        columns.append(plain_columns([{"a": "y", "b": ["t"], "c": "late"}]))
    monkeypatch.undo()
    columns.append(plain_columns([{"d": 1}]))
    assert [dict(r) for r in columns.rows([0, 1])] == [{"a": "x"}, {"d": 1}]


def test_a_reopened_stores_columns_are_plain_read_only_arrays(tmp_path):
    """Views of the column file's map, not `np.memmap`s (whose Python hooks ran on every
    index into them), and still read-only: the first write copies them."""
    store = open_store(f"faiss:{tmp_path}", dim=2)
    store.upsert(["a", "b"], np.eye(2), [{"t": "x", "g": ["p", "q"], "n": 1}, {"t": "y"}])
    store.close()
    again = open_store(f"faiss:{tmp_path}")
    arrays = [
        getattr(field, name)
        for field in again._table.columns.fields.values()
        for name in ("kind", "num", "code", "list_slots", "list_codes")
    ]
    assert not any(isinstance(a, np.memmap) for a in arrays)
    assert not any(a.flags.writeable for a in arrays if a.size and a.strides != (0,))
    assert again.fetch(["a"])[0].metadata == {"t": "x", "g": ["p", "q"], "n": 1}
    again.upsert(["c"], np.ones((1, 2)), [{"t": "z"}])
    assert [r.metadata for r in again.fetch(["a", "c"])] == [
        {"t": "x", "g": ["p", "q"], "n": 1},
        {"t": "z"},
    ]
    again.close()


@pytest.mark.parametrize(
    "batches",
    [
        [["a", "b", "a"], ["c", "a", "d", "c"]],  # a few new strings: numbered as missed
        [[f"t{n}" for n in range(100)] + ["t3"], ["t5", *(f"u{n}" for n in range(80)), "u1"]],
        [[f"w{n}" for n in range(100)], [f"z{n}" for n in range(70)]],
    ],
    ids=["few new", "mostly new", "all new and distinct"],
)
def test_strings_are_numbered_once_in_order_of_first_appearance(batches):
    """Whether a batch's new strings are numbered as they miss or found together first,
    each string gets one code, in the order first seen, and keeps it."""
    vocab, seen = Vocab(), []
    for batch in batches:
        codes = vocab.codes(batch).tolist()
        seen += [s for s in dict.fromkeys(batch) if s not in seen]
        assert vocab.strings == seen
        assert [vocab.strings[c] for c in codes] == batch
        assert all(vocab.find(s) == seen.index(s) for s in seen)


def test_a_dictionary_packed_at_each_save_grows_with_its_strings(tmp_path):
    """Each save extends the last packing of a field's strings with those added since; a
    reopened store's dictionary is saved again as read, without decoding it."""
    uri = f"faiss:{tmp_path / 's'}?index=Flat"
    store = open_store(uri, dim=2, metric="l2")
    titles = [f"title {n} é" for n in range(300)]
    for start in (0, 100, 200):
        part = range(start, start + 100)
        store.upsert([str(n) for n in part], np.ones((100, 2)), [{"t": titles[n]} for n in part])
        store.flush()
    store.close()
    again = open_store(uri)
    again.upsert(["x"], np.ones((1, 2)), [{"n": 1}])
    again.flush()
    (vocab,) = [f.vocab for f in again._table.columns.fields.values() if len(f.vocab)]
    assert vocab._strings is None  # saved again without decoding
    again.close()
    last = open_store(uri)
    assert [r.metadata["t"] for r in last.fetch([str(n) for n in range(300)])] == titles
    assert last.count({"t": titles[150]}) == 1 and last.count({"t": {"$in": titles[::7]}}) == 43
