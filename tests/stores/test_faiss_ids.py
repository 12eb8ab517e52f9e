"""A FAISS store's ids, packed as UTF-8 bytes with offsets (`PackedIds`): what goes in
comes out (non-ASCII ids, dead slots, compaction), the memory they take per record, and a
store written by the previous format (ids as a JSON list) still opens and is converted by
its next save."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from embedrec import open_store
from embedrec.stores.batch_checks import KEY_BITS
from embedrec.stores.faiss.id_index import KeyFilter
from embedrec.stores.faiss.packed import PackedIds

FORMAT_2 = Path(__file__).parent / "data" / "faiss_format2"
"""Written by embedrec at 7309bec (format 2: ids.2.json): HNSW16, 4-d, l2, ids r0..r9 with
r4 and r6 non-ASCII ("ünï-4", "日本-6"); r3 deleted and r5 overwritten (two dead slots)."""

NAMES = ["r0", "r1", "r2", "ünï-4", "r5", "日本-6", "r7", "r8", "r9"]


def test_a_format_2_store_opens_and_its_next_save_packs_its_ids(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(FORMAT_2, path)
    store = open_store(f"faiss:{path}")
    assert sorted(store.ids()) == sorted(NAMES) and store.count() == 9
    assert store.fetch(["r5"])[0].metadata == {"genre": "Drama", "year": 2001, "new": True}
    assert store.fetch(["r3"]) == []
    hits = store.search(np.full(4, 2.4, np.float32), 3)[0]  # "日本-6" is [2.4, 2.5, 2.6, 2.7]
    assert hits.ids[0] == "日本-6"
    store.upsert(["new-ü"], np.ones((1, 4), np.float32), [{"genre": "Drama"}])
    store.close()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == 3 and manifest["files"]["ids"]["file"].endswith(".cols")
    assert not list(path.glob("ids.*.json"))
    again = open_store(f"faiss:{path}")
    assert sorted(again.ids()) == sorted([*NAMES, "new-ü"])
    assert again.fetch(["r3", "ünï-4"])[0].id == "ünï-4"
    assert again.search(np.full(4, 2.4, np.float32), 1)[0].ids == ["日本-6"]


def test_packed_ids_round_trip_dead_slots_and_compaction():
    ids = PackedIds.of(["a", None, "ünï", "日本"])
    assert len(ids) == 4 and ids.nonempty().tolist() == [True, False, True, True]
    ids.extend(["x", "✓✓"])
    assert ids.strings() == ["a", "", "ünï", "日本", "x", "✓✓"]
    assert ids.take(np.array([[5, 2], [0, -1]])) == [["✓✓", "ünï"], ["a", ""]]
    alive = np.array([True, False, True, False, True, True])
    data, offsets = ids.saved(alive)
    assert PackedIds(data, offsets).strings() == ["a", "", "ünï", "", "x", "✓✓"]
    assert ids.taken(np.flatnonzero(alive)).strings() == ["a", "ünï", "x", "✓✓"]


@pytest.mark.parametrize("kind", ["Flat", "HNSW16"])
def test_ids_survive_overwrites_deletes_compaction_and_reopen(tmp_path, kind):
    path = tmp_path / "s"
    store = open_store(f"faiss:{path}?index={kind}", dim=4, metric="l2")
    names = [f"ü{i}" if i % 3 else f"id-{i}" for i in range(300)]
    vectors = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    store.upsert(names, vectors)
    store.upsert(names[:50], vectors[:50])  # overwritten: 50 dead slots
    store.delete(names[50:60])
    store.flush()
    store.close()
    again = open_store(f"faiss:{path}")
    kept = names[:50] + names[60:]
    assert sorted(again.ids()) == sorted(kept)
    assert [r.id for r in again.fetch(names[45:65])] == names[45:50] + names[60:65]
    assert again.search(vectors[100], 1)[0].ids == [names[100]]
    again.compact()
    assert sorted(again.ids()) == sorted(kept)
    assert again.search(vectors[7], 1)[0].ids == [names[7]]


def test_ids_take_a_few_bytes_a_record_in_memory(tmp_path):
    """A store's ids cost their packed bytes, offsets, liveness and the id index's key and
    slot (about 43 bytes a record here, with room to grow), not a Python string each (over
    90 bytes with the list and the object array hits read from); reopened, the ids are a map
    of the file until a lookup builds the index."""
    n = 100_000
    vectors = np.zeros((n, 2), np.float32)
    tracemalloc.start()
    try:
        store = open_store(f"faiss:{tmp_path / 's'}?index=Flat&metric=l2", dim=2)
        base = tracemalloc.get_traced_memory()[0]
        for start in range(0, n, 10_000):
            store.upsert(
                [f"item-{i:07d}" for i in range(start, start + 10_000)],
                vectors[start : start + 10_000],
            )
        store.search(np.zeros(2, np.float32), 10)
        built = (tracemalloc.get_traced_memory()[0] - base) / n
        store.close()
        del store
        base = tracemalloc.get_traced_memory()[0]
        again = open_store(f"faiss:{tmp_path / 's'}")
        again.search(np.zeros((5, 2), np.float32), 10)
        reopened = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert built < 60, built
    assert reopened < 10, reopened


def test_overwrites_are_found_while_the_key_filter_grows():
    """The id index's bit filter is rebuilt larger as a store grows (from 8,192 entries):
    every id written before and after each rebuild is found again, so that an overwrite
    kills the old slot instead of leaving the id twice."""
    store = open_store("faiss:?index=Flat&metric=l2", dim=2)
    names = [f"n{i}" for i in range(30_000)]
    for start in range(0, len(names), 1000):
        store.upsert(names[start : start + 1000], np.zeros((1000, 2), np.float32))
    store.upsert(names[::7], np.ones((len(names[::7]), 2), np.float32))
    assert store.count() == len(names)
    fetched = store.fetch([*names[::3], "absent"])
    assert [r.id for r in fetched] == names[::3]
    assert [bool(r.vector[0]) for r in fetched] == [int(r.id[1:]) % 7 == 0 for r in fetched]


def test_the_key_filter_holds_every_key_added_and_few_others():
    rng = np.random.default_rng(0)
    keys = np.sort(rng.integers(-(2**63), 2**63 - 1, 50_000)) & KEY_BITS
    key_filter = KeyFilter([keys[:20_000]])
    key_filter.add(keys[20_000:30_000])
    assert key_filter.may_hold(keys[:30_000]).all()
    assert KeyFilter([keys[:30_000], keys[30_000:]]).may_hold(keys).all()
    others = np.sort(rng.integers(-(2**63), 2**63 - 1, 50_000)) & KEY_BITS
    assert key_filter.may_hold(others).mean() < 0.2
