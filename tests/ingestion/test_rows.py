"""`RowBuilder.build_many` (a chunk a column at a time) gives what `build` gives record by
record: the same rows, the same rejects, in the same order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.manifest import content_hash, content_hashes
from embedrec.ingestion.pipeline import metadata_of
from embedrec.ingestion.rows import ChunkMetadata, Row, RowBuilder
from embedrec.ingestion.values import column_jsons

COLUMNS = ColumnMap(
    id="id",
    text="{title} {{x}} ({year}): {tags}",
    metadata=parse_metadata_spec("title,year:int,tags:list!,score:float,new:bool,note:str!"),
)
CELLS = st.sampled_from(
    ["", " ", "a", " b ", "é", "3", " 12 ", "1_000", "3.0", "1e3", "-0", "2.5", "nan", "inf",
     "9007199254740993", "true", "N", "maybe", "x|y", "| |", "a| b |", "\udce9", "0x10"]
)  # fmt: skip
RECORDS = st.lists(
    st.fixed_dictionaries(
        {name: CELLS for name in ("title", "year", "tags", "score", "new", "note")}
        | {"id": st.sampled_from(["1", "2", " 3", "", " ", "4", "é"])}
    ),
    max_size=12,
)


def build_both(records: list[dict]) -> tuple[list, list]:
    rows = [2 * i + 2 for i in range(len(records))]
    one, many = RowBuilder(Path("c.csv"), COLUMNS), RowBuilder(Path("c.csv"), COLUMNS)
    by_record = [one.build(r, rec) for r, rec in zip(rows, records, strict=True)]
    return by_record, many.build_many(rows, records)


@settings(max_examples=300, deadline=None)
@given(RECORDS, st.integers(0, 3))
def test_a_chunk_builds_as_its_records_build(records: list[dict], chunks: int) -> None:
    """Across chunks too: an id seen in an earlier chunk is a duplicate in a later one."""
    rows = [2 * i + 2 for i in range(len(records))]
    one, many = RowBuilder(Path("c.csv"), COLUMNS), RowBuilder(Path("c.csv"), COLUMNS)
    by_record = [one.build(r, rec) for r, rec in zip(rows, records, strict=True)]
    step = max(1, len(records) // (chunks + 1))
    by_chunk = []
    for start in range(0, len(records), step):
        by_chunk += many.build_many(rows[start : start + step], records[start : start + step])
    assert by_chunk == by_record
    built = [row for row in by_record if isinstance(row, Row)]
    assert content_hashes("e", [r for r in by_chunk if isinstance(r, Row)]) == content_hashes(
        "e", built
    )  # the chunk's metadata JSON, made a column at a time, is each record's


def test_plain_cells_take_the_column_path() -> None:
    records = [
        {"id": "1", "title": "Heat", "year": "1995", "tags": "a|b", "score": "2.5",
         "new": "yes", "note": "n"},
        {"id": "2", "title": "", "year": "", "tags": "c", "score": "", "new": "", "note": "m"},
    ]  # fmt: skip
    by_record, by_chunk = build_both(records)
    assert by_chunk == by_record
    assert by_chunk[0].payload == "Heat {x} (1995): a|b"
    assert by_chunk[1].metadata == {"tags": ["c"], "note": "m"}
    plain = [records[0], records[0] | {"id": "3", "title": 'say "hi"\\', "tags": "é|b"}]
    by_record, by_chunk = build_both(plain)
    assert all(row.metadata_json is not None for row in by_chunk)
    assert content_hashes("e", by_chunk) == content_hashes("e", by_record)


def test_cells_that_are_not_strings_are_built_record_by_record() -> None:
    records = [{"id": 1, "title": "t", "year": 1995, "tags": ["a"], "note": "n"}]
    by_record, by_chunk = build_both(records)
    assert by_chunk == by_record and by_chunk[0].metadata["year"] == 1995


def test_content_hashes_stay_those_of_earlier_versions() -> None:
    """A manifest written before keeps its rows unchanged: the digest below is what
    `content_hash` gave before its JSON encoder was built once (at 05d606d)."""
    row = Row(2, "a", "Café (1995)", {"title": "Café", "year": 1995, "genres": ["A", "ü"],
              "s": 2.5, "n": True, "z": 1e300})  # fmt: skip
    digest = "657d250296ea220a1db6ea78f3836de32a92168e53fc985e2663fe40ee1e0db7"
    assert content_hash("hash-bow-64", row) == digest
    image = Row(3, "b", b"\x89PNG", {})
    hashes = content_hashes("hash-bow-64", [row, image, row])
    assert hashes == [digest, content_hash("hash-bow-64", image), digest]


SCALARS = (
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=6)
    | st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\u2028", "é", "日本"])
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.lists(st.text(max_size=4), max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4), st.integers(0, 5), st.data())
def test_metadata_json_by_columns_is_each_records_json(fields: int, n: int, data) -> None:
    """`column_jsons` gives `json.dumps(record, sort_keys=True, ensure_ascii=False)` of each
    record, the text content hashes have always taken."""
    names = data.draw(st.lists(st.text(max_size=3), min_size=fields, max_size=fields, unique=True))
    kinds = {name: data.draw(st.sampled_from(["str", "int", "mixed"])) for name in names}
    values = {
        "str": st.text(max_size=5), "int": st.integers(-(2**60), 2**60), "mixed": SCALARS
    }  # fmt: skip
    columns = {
        name: data.draw(st.lists(values[kinds[name]], min_size=n, max_size=n)) for name in names
    }
    records = [{name: columns[name][i] for name in names} for i in range(n)]
    want = [json.dumps(record, sort_keys=True, ensure_ascii=False) for record in records]
    assert column_jsons(columns, n) == want


def test_content_hashes_are_sha256_of_name_payload_and_metadata_json() -> None:
    """The definition, for each kind of row `content_hashes` takes a path of its own for:
    text (one pass for the whole list), an image's bytes, a payload with a lone surrogate
    (a CSV cell read with surrogateescape), and a row with or without its JSON made."""
    meta = {"title": "Café", "year": 1995, "genres": ["A", "ü"]}
    text = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    rows = [
        Row(2, "a", "Café (1995)", meta),
        Row(3, "b", "Café (1995)", meta, text),
        Row(4, "c", b"\x89PNG", {}),
        Row(5, "d", "bad \udce9 byte", meta),
    ]
    payloads = [b"Caf\xc3\xa9 (1995)", b"Caf\xc3\xa9 (1995)", b"\x89PNG", b"bad \xe9 byte"]
    jsons = [text, text, "{}", text]
    want = [
        hashlib.sha256(b"e\0" + payload + b"\0" + meta_json.encode()).hexdigest()
        for payload, meta_json in zip(payloads, jsons, strict=True)
    ]
    assert content_hashes("e", rows) == want
    assert content_hashes("e", rows[:2]) == want[:2]  # text alone: the one-pass path
    assert [content_hash("e", row) for row in rows] == want


def test_a_chunk_with_blank_optional_cells_makes_every_rows_json() -> None:
    """A record that lacks a key gets its own dict's JSON, the others theirs from the
    columns: none is left to be made one by one when hashed."""
    columns = ColumnMap(id="id", text="{title}", metadata=parse_metadata_spec("title,year:int"))
    records = [{"id": str(i), "title": f"t{i}", "year": "" if i % 3 else "1990"} for i in range(9)]
    built = RowBuilder(Path("c.csv"), columns).build_many(list(range(2, 11)), records)
    assert all(isinstance(row, Row) and row.metadata_json is not None for row in built)
    assert [row.metadata_json for row in built] == [
        json.dumps(row.metadata, sort_keys=True, ensure_ascii=False) for row in built
    ]
    assert built[1].metadata == {"title": "t1"} and built[3].metadata["year"] == 1990


def test_a_batch_goes_to_the_store_as_columns_of_its_records() -> None:
    """`metadata_of` gives the store the rows' metadata as columns (None where a record
    lacks a field) when every row comes from a chunk `build_many` built, across chunks and
    with rows left out; a row built alone makes it a dict per record, the same records."""
    columns = ColumnMap(id="id", text="{title}", metadata=parse_metadata_spec("title,year:int"))
    builder = RowBuilder(Path("c.csv"), columns)
    records = [{"id": str(i), "title": f"t{i}", "year": "" if i % 3 else "1990"} for i in range(9)]
    first = builder.build_many(list(range(2, 7)), records[:5])
    second = builder.build_many(list(range(7, 11)), records[5:])
    rows = [row for row in first + second if isinstance(row, Row)][1:-1]  # from both chunks
    assert all(isinstance(row.meta, ChunkMetadata) for row in rows)
    dicts = [row.metadata for row in rows]
    assert dicts[2] == {"title": "t3", "year": 1990} and dicts[0] == {"title": "t1"}
    assert metadata_of(rows) == {
        name: [meta.get(name) for meta in dicts] for name in ("title", "year")
    }
    alone = Row(1, "x", "x", {"title": "x"})
    assert metadata_of([*rows, alone]) == [*dicts, {"title": "x"}]
    assert alone == Row(1, "x", "x", {"title": "x"}, "{}", 3) != rows[0]
