"""One bad value never aborts an ingest: every good row lands, every bad row is in the rejects
file with its row, field and reason, and nothing else is. A small hashing embedder stands in
for a model so that many catalogs can be tried."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec.embedders import Embedder, EmbeddingCache, InputError
from embedrec.embedders.base import CatalogRow
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary
from embedrec.stores import VectorStore, open_store
from embedrec.stores.batch_checks import CheckedBatch

DIM = 8


class HashEmbedder:
    """Text -> a unit vector seeded by its hash. "poison" is an input it refuses, "void"
    one it maps to a zero vector (which a cosine store refuses)."""

    name = "test-hash"
    dim = DIM
    modality = "text"

    def prepare(self, row: CatalogRow) -> str:
        assert isinstance(row.payload, str)
        return row.payload

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(batch), DIM), np.float32)
        for i, text in enumerate(batch):
            if "poison" in text:
                raise InputError(i, "poisoned text")
            if "void" not in text:
                seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
                v = np.random.default_rng(seed).standard_normal(DIM)
                out[i] = v / np.linalg.norm(v)
        return out


COLUMNS = ColumnMap(id="id", text="{title}", metadata=parse_metadata_spec("year:int,tags:list"))


def run(work: Path, path: Path, **options: Any) -> IngestSummary:
    embedder: Embedder = HashEmbedder()  # type: ignore[assignment]
    with EmbeddingCache(work / "cache") as cache:
        return ingest(
            Source(path, COLUMNS), f"faiss:{work / 'store'}", "test-hash",
            IngestOptions(batch_size=7, rejects=work / "rejects.jsonl", **options),
            embedder=embedder, cache=cache, manifest=work / "manifest.sqlite",
        )  # fmt: skip


def rejected(work: Path) -> list[dict[str, Any]]:
    path = work / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# Each bad value with the field its reject must name.
BAD_VALUES: list[tuple[str, Any]] = [
    ("title", "caf\udce9"),  # a lone surrogate: not valid UTF-8
    ("title", "   "),  # empty text
    ("title", "poison pill"),  # the embedder refuses it
    ("year", 10**30),
    ("year", "1e30"),
    ("year", -(10**25)),
    ("year", 2**53 + 1),
    ("year", "nineteen"),
    ("year", 1990.5),
    ("tags", ["ok", 3]),
    ("tags", {"nested": "x"}),
    ("tags", ["caf\ud800"]),
]
good_record = st.fixed_dictionaries(
    {
        "title": st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12).filter(
            lambda t: "void" not in t and "poison" not in t
        ),
        "year": st.integers(-(2**53), 2**53),
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    }
)
record = st.one_of(
    good_record.map(lambda r: (r, None)),
    st.tuples(good_record, st.sampled_from(BAD_VALUES)).map(
        lambda pair: ({**pair[0], pair[1][0]: pair[1][1]}, pair[1][0])
    ),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record, min_size=1, max_size=25))
def test_good_rows_land_and_each_bad_row_is_one_reject(records) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "items.jsonl"
        lines = [json.dumps({"id": f"r{i}", **rec}) for i, (rec, _) in enumerate(records)]
        path.write_text("\n".join(lines) + "\n")
        summary = run(work, path)
        good = {f"r{i}": rec for i, (rec, bad) in enumerate(records) if bad is None}
        expected = [(i + 1, f"r{i}", bad) for i, (_, bad) in enumerate(records) if bad]
        got = sorted(rejected(work), key=lambda r: r["row"])  # embedder refusals come later
        assert [(r["row"], r["id"], r["field"]) for r in got] == expected
        assert all(r["reason"] and r["file"] == str(path) for r in got)
        assert (summary.upserted, summary.rejected) == (len(good), len(expected))
        if not good:  # nothing to write: no store is created
            assert not (work / "store").exists()
            return
        with open_store(f"faiss:{work / 'store'}") as store:
            assert store.count() == len(good)
            for rec in store.fetch(list(good)):
                want = good[rec.id]
                assert rec.metadata == {"year": want["year"], "tags": want["tags"]}


def test_a_record_the_store_refuses_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,title,year,tags\na,one,1,x\nb,void,2,y\nc,three,3,z\n")
    summary = run(tmp_path, path)
    (reject,) = rejected(tmp_path)
    assert (reject["row"], reject["id"]) == (3, "b") and "zero vector" in reject["reason"]
    assert (summary.upserted, summary.rejected) == (2, 1)
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        assert sorted(r.id for r in store.fetch(["a", "b", "c"])) == ["a", "c"]
    again = run(tmp_path, path)  # the refused row was not recorded as held: tried again
    assert (again.unchanged, again.rejected, again.upserted) == (2, 1, 0)


def test_declared_fields_reach_the_store_before_its_first_upsert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    declare, upsert = VectorStore.declare_fields, VectorStore.upsert_checked

    def spy_declare(self: VectorStore, fields: Any) -> None:
        calls.append(("declare", dict(fields)))
        declare(self, fields)

    def spy_upsert(self: VectorStore, batch: CheckedBatch) -> int:
        calls.append(("upsert", len(batch)))
        return upsert(self, batch)

    monkeypatch.setattr(VectorStore, "declare_fields", spy_declare)
    monkeypatch.setattr(VectorStore, "upsert_checked", spy_upsert)
    path = tmp_path / "items.csv"
    path.write_text("id,title,year,tags\n" + "".join(f"m{i},t{i},{i},x\n" for i in range(10)))
    run(tmp_path, path)
    # the batches of 7 reach the writer gathered (pipeline.run.HAND_OFF_ROWS): one upsert
    assert calls == [("declare", {"year": "int", "tags": "list"}), ("upsert", 10)]
