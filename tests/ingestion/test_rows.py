"""`RowBuilder.build_many` (a chunk a column at a time) gives what `build` gives record by
record: the same rows, the same rejects, in the same order."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.manifest import content_hash, content_hashes
from embedrec.ingestion.rows import Row, RowBuilder

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
