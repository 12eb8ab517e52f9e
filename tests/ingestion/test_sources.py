"""Catalog sources: formats, the column mapping, and every kind of bad catalog."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from embedrec.data.tables import CatalogError
from embedrec.ingestion.columns import ColumnMap, MetaField, parse_metadata_spec, template_fields
from embedrec.ingestion.rows import Reject, Row
from embedrec.ingestion.sources import Source

MOVIES = ColumnMap(
    id="item_id",
    text="{title} ({year}): {genres}",
    metadata=parse_metadata_spec("title,year:int,genres:list"),
)
RECORDS = [
    {"item_id": "1", "title": "Toy Story", "year": "1995", "genres": "Animation|Comedy"},
    {"item_id": "2", "title": "GoldenEye", "year": "", "genres": "Action"},
    {"item_id": "3", "title": "Heat", "year": "1995", "genres": "Crime|Thriller"},
]


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def read_all(source: Source, size: int = 256) -> list[Row | Reject]:
    return [item for chunk in source.chunks(size) for item in chunk]


def rows_and_rejects(source: Source) -> tuple[list[Row], list[Reject]]:
    items = read_all(source)
    return [i for i in items if isinstance(i, Row)], [i for i in items if isinstance(i, Reject)]


def movies_csv(tmp_path: Path, body: str) -> Path:
    return write_csv(tmp_path / "items.csv", "item_id,title,year,genres\n" + body)


# -- formats and the mapping -----------------------------------------------------------------


def _write(fmt: str, path: Path, records: list[dict]) -> Path:
    frame = pd.DataFrame(records)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_every_format_gives_the_same_rows(tmp_path: Path, fmt: str) -> None:
    path = _write(fmt, tmp_path / f"items.{fmt}", RECORDS)
    rows, rejects = rows_and_rejects(Source(path, MOVIES))
    assert rejects == []
    assert [r.id for r in rows] == ["1", "2", "3"]
    assert rows[0].payload == "Toy Story (1995): Animation|Comedy"
    assert rows[0].metadata == {
        "title": "Toy Story",
        "year": 1995,
        "genres": ["Animation", "Comedy"],
    }
    # an empty year is left out of the metadata rather than stored as null
    assert rows[1].metadata == {"title": "GoldenEye", "genres": ["Action"]}
    # row numbers are what an editor shows: the header is line 1 of a CSV
    first = {"csv": 2, "tsv": 2, "jsonl": 1, "parquet": 1}[fmt]
    assert [r.row for r in rows] == [first, first + 1, first + 2]


def test_native_jsonl_types_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        json.dumps({"id": 7, "title": "Up", "year": 2009, "genres": ["Animation"], "score": 4.5})
        + "\n\n"
        + json.dumps({"id": "x8", "title": "Heat", "genres": [], "score": 3, "new": True})
        + "\n"
    )
    cols = ColumnMap(
        id="id", text="{title}: {genres}", metadata=parse_metadata_spec("year:int,genres,score,new")
    )
    rows, rejects = rows_and_rejects(Source(path, cols))
    assert rejects == []
    assert [(r.row, r.id) for r in rows] == [(1, "7"), (3, "x8")]
    assert rows[0].payload == "Up: Animation"
    assert rows[0].metadata == {"year": 2009, "genres": ["Animation"], "score": 4.5}
    assert rows[1].metadata == {"genres": [], "score": 3, "new": True}


def test_chunks_hold_at_most_n_records(tmp_path: Path) -> None:
    body = "".join(f"{i},Title {i},2000,Drama\n" for i in range(5))
    source = Source(movies_csv(tmp_path, body), MOVIES)
    assert [len(c) for c in source.chunks(2)] == [2, 2, 1]
    assert source.estimate_rows() == 5


def test_quoted_multiline_cells_keep_their_starting_line(tmp_path: Path) -> None:
    body = '1,"Two\nlines",1999,Drama\n2,Plain,2000,Comedy\n'
    rows, _ = rows_and_rejects(Source(movies_csv(tmp_path, body), MOVIES))
    assert [(r.row, r.id) for r in rows] == [(2, "1"), (4, "2")]
    assert rows[0].payload.startswith("Two\nlines")


def test_typed_metadata_conversions(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "id,t,n,f,b,l\na,x, 12 ,2.5,yes, p | q ||\n")
    cols = ColumnMap(
        id="id", text="{t}", metadata=parse_metadata_spec("n:int,f:float,b:bool,l:list")
    )
    (row,) = read_all(Source(path, cols))
    assert row.metadata == {"n": 12, "f": 2.5, "b": True, "l": ["p", "q"]}


def test_metadata_spec_parsing() -> None:
    assert parse_metadata_spec("title, year:int!,genres:list") == (
        MetaField("title"),
        MetaField("year", "int", required=True),
        MetaField("genres", "list"),
    )
    with pytest.raises(ValueError, match="unknown type 'integer'"):
        parse_metadata_spec("year:integer")
    with pytest.raises(ValueError, match="named twice"):
        parse_metadata_spec("a,a:int")


def test_template_parsing() -> None:
    assert template_fields("{title} ({year}): {genres} {title}") == ("title", "year", "genres")
    for bad in ("{}", "{0}", "no fields", "{a.b}", "{unclosed"):
        with pytest.raises(ValueError, match="template"):
            template_fields(bad)
    with pytest.raises(ValueError, match="exactly one"):
        ColumnMap(id="id", text="{t}", image="img")


# -- bad catalogs: file-level errors name file, row and field --------------------------------


def test_no_id_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "items.csv", "movie,title,year,genres\n1,a,1990,Drama\n")
    with pytest.raises(CatalogError) as err:
        read_all(Source(path, MOVIES))
    assert (err.value.file, err.value.row, err.value.field) == (str(path), 1, "item_id")
    assert "no id column 'item_id'" in str(err.value) and str(path) in str(err.value)


def test_template_naming_an_absent_column(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "1,a,1990,Drama\n")
    cols = ColumnMap(id="item_id", text="{title}: {plot}")
    with pytest.raises(CatalogError, match=r"row 1, field 'plot'.*text template") as err:
        read_all(Source(path, cols))
    assert "'title', 'year'" in str(err.value)  # lists the columns there are


def test_absent_metadata_column(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "1,a,1990,Drama\n")
    cols = ColumnMap(id="item_id", text="{title}", metadata=parse_metadata_spec("rating:float"))
    with pytest.raises(CatalogError, match="no metadata column 'rating'"):
        read_all(Source(path, cols))


def test_a_first_jsonl_record_without_a_template_column_is_a_reject(tmp_path: Path) -> None:
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"item_id": 1, "name": "a"}\n{"item_id": 2, "title": "b"}\n{"title": "c"}\n')
    rows, rejects = rows_and_rejects(Source(jsonl, ColumnMap(id="item_id", text="{title}")))
    assert [(r.row, r.id, r.payload) for r in rows] == [(2, "2", "b")]
    assert [(r.row, r.id, r.field) for r in rejects] == [(1, "1", "title"), (3, None, "item_id")]
    assert "absent from this record: title" in rejects[0].reason
    assert "missing" in rejects[1].reason


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"items.{suffix}"
    path.write_bytes(b"")
    with pytest.raises(CatalogError, match=rf"items\.{suffix}.*(empty|not a readable Parquet)"):
        read_all(Source(path, MOVIES))


def test_header_only_file(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "")
    with pytest.raises(CatalogError, match=r"items\.csv, row 2: the header has no rows"):
        read_all(Source(path, MOVIES))
    parquet = tmp_path / "items.parquet"
    pd.DataFrame({k: pd.Series([], dtype=str) for k in RECORDS[0]}).to_parquet(parquet)
    with pytest.raises(CatalogError, match="no rows"):
        read_all(Source(parquet, MOVIES))


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot tell the format"):
        Source(write_csv(tmp_path / "items.txt", "a\n"), MOVIES)
    with pytest.raises(CatalogError, match="no such file"):
        Source(tmp_path / "absent.csv", MOVIES)


# -- bad rows: rejected with file, row, id and field; every good row still comes out -----------


def _only_reject(rejects: list[Reject]) -> Reject:
    assert len(rejects) == 1, rejects
    return rejects[0]


def test_duplicate_ids_reject_the_second(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "1,a,1990,Drama\n2,b,1991,Drama\n1,c,1992,Drama\n")
    rows, rejects = rows_and_rejects(Source(path, MOVIES))
    assert [(r.id, r.metadata["title"]) for r in rows] == [("1", "a"), ("2", "b")]
    bad = _only_reject(rejects)
    assert (bad.row, bad.id, bad.field) == (4, "1", "item_id")
    assert "first seen at row 2" in bad.reason
    assert bad.message().startswith(f"{path}, row 4 (id '1'), field 'item_id'")


def test_empty_id_and_empty_text(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, ",a,1990,Drama\n2,,,\n3,c,1992,Drama\n")
    cols = ColumnMap(id="item_id", text="{title} {genres}")
    rows, rejects = rows_and_rejects(Source(path, cols))
    assert [r.id for r in rows] == ["3"]
    assert [(r.row, r.id, r.field) for r in rejects] == [
        (2, None, "item_id"),
        (3, "2", "title, genres"),
    ]
    assert "empty text" in rejects[1].reason


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    body = "item_id,title,year,genres\n1,Caf\xe9,1990,Drama\n2,Fine,1991,Drama\n"
    path = write_csv(tmp_path / "items.csv", body, encoding="latin-1")
    rows, rejects = rows_and_rejects(Source(path, MOVIES))
    assert [r.id for r in rows] == ["2"]
    bad = _only_reject(rejects)
    assert (bad.row, bad.id, bad.field) == (2, "1", "title") and "UTF-8" in bad.reason
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_bytes(b'{"item_id": "1", "title": "Caf\xe9"}\n{"item_id": "2", "title": "ok"}\n')
    rows, rejects = rows_and_rejects(Source(jsonl, ColumnMap(id="item_id", text="{title}")))
    assert [r.id for r in rows] == ["2"]
    assert (_only_reject(rejects).row, rejects[0].field) == (1, "title")


def test_wrong_types(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "1,a,nineteen,Drama\n2,b,1990.5,Drama\n3,c,1990,Drama\n")
    rows, rejects = rows_and_rejects(Source(path, MOVIES))
    assert [r.id for r in rows] == ["3"]
    assert [(r.row, r.field) for r in rejects] == [(2, "year"), (3, "year")]
    assert "expected int, got 'nineteen'" in rejects[0].reason
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"id": "1", "t": "a", "year": true}\n{"id": 2.5, "t": "b"}\n'
        '{"id": "3", "t": "c", "year": 1}\n'
    )
    cols = ColumnMap(id="id", text="{t}", metadata=parse_metadata_spec("year:int"))
    rows, rejects = rows_and_rejects(Source(jsonl, cols))
    assert [r.id for r in rows] == ["3"]
    assert [(r.row, r.field) for r in rejects] == [(1, "year"), (2, "id")]


def test_nested_and_null_metadata(tmp_path: Path) -> None:
    jsonl = tmp_path / "items.jsonl"
    lines = [
        {"id": "1", "t": "a", "info": {"x": 1}},
        {"id": "2", "t": "b", "info": None},
        {"id": "3", "t": "c", "info": ["ok", 3]},
        {"id": "4", "t": "d", "info": "plain", "year": None},
    ]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cols = ColumnMap(id="id", text="{t}", metadata=parse_metadata_spec("info,year:int!"))
    rows, rejects = rows_and_rejects(Source(jsonl, cols))
    assert rows == []
    assert [(r.row, r.field) for r in rejects] == [
        (1, "info"),
        (2, "year"),
        (3, "info"),
        (4, "year"),
    ]
    assert "nested objects" in rejects[0].reason
    assert "required" in rejects[1].reason
    assert "only strings" in rejects[2].reason
    # the same catalog with year optional: a null leaves the key out, the nested ones still fail
    cols = ColumnMap(id="id", text="{t}", metadata=parse_metadata_spec("info,year:int"))
    rows, rejects = rows_and_rejects(Source(jsonl, cols))
    assert [(r.id, r.metadata) for r in rows] == [("2", {}), ("4", {"info": "plain"})]
    assert [r.row for r in rejects] == [1, 3]


def test_unparseable_records(tmp_path: Path) -> None:
    path = movies_csv(tmp_path, "1,a,1990,Drama,extra\n2,b,1991,Drama\n")
    rows, rejects = rows_and_rejects(Source(path, MOVIES))
    assert [r.id for r in rows] == ["2"]
    assert "5 fields where the header has 4" in _only_reject(rejects).reason
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text('{"id": "1", "t": "a"}\n{"id": "2", "t":\n[1, 2]\n{"id": "4", "t": "d"}\n')
    rows, rejects = rows_and_rejects(Source(jsonl, ColumnMap(id="id", text="{t}")))
    assert [r.id for r in rows] == ["1", "4"]
    assert [(r.row, r.reason.split(":")[0]) for r in rejects] == [
        (2, "not valid JSON"),
        (3, "a list, not an object"),
    ]


def _png(color: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_image_paths_relative_to_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png(10))
    path = write_csv(
        tmp_path / "items.csv", "id,image,cat\na,img/a.png,Bag\nb,img/missing.png,Bag\nc,,Bag\n"
    )
    cols = ColumnMap(id="id", image="image", metadata=parse_metadata_spec("cat"))
    rows, rejects = rows_and_rejects(Source(path, cols))
    assert [(r.id, r.payload) for r in rows] == [("a", _png(10))]
    assert [(r.row, r.id, r.field) for r in rejects] == [(3, "b", "image"), (4, "c", "image")]
    assert "image file not found" in rejects[0].reason and "missing.png" in rejects[0].reason


def test_image_bytes_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"id": ["a", "b"], "image": [_png(1), _png(2)]}).to_parquet(path)
    rows, rejects = rows_and_rejects(Source(path, ColumnMap(id="id", image="image")))
    assert rejects == [] and [r.payload for r in rows] == [_png(1), _png(2)]


def test_values_outside_a_columns_range_reject_only_their_row(tmp_path: Path) -> None:
    body = "1,a,1e30,D\n2,b,1e3,D\n3,c,-1e20,D\n4,d,9007199254740992,D\n5,e,9007199254740993,D\n"
    rows, rejects = rows_and_rejects(Source(movies_csv(tmp_path, body), MOVIES))
    assert [(r.id, r.metadata["year"]) for r in rows] == [("2", 1000), ("4", 2**53)]
    assert [(r.row, r.id, r.field) for r in rejects] == [
        (2, "1", "year"),
        (4, "3", "year"),
        (6, "5", "year"),
    ]
    assert "'1e30' is outside +-2**53" in rejects[0].reason
    jsonl = tmp_path / "items.jsonl"
    records = [
        {"id": "1", "t": "a", "n": 10**30},
        {"id": "2", "t": "b", "n": 5, "s": "caf\udce9"},
        {"id": "3", "t": "c", "n": 7, "s": ["ok", "\ud800"]},
        {"id": "4", "t": "d", "n": 10**400},
        {"id": "5", "t": "e", "n": -(2**53), "s": "fine"},
        {"id": "6", "t": "f", "n": 2**53 + 1},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))  # escapes the surrogates
    cols = ColumnMap(id="id", text="{t}", metadata=parse_metadata_spec("n,s"))
    rows, rejects = rows_and_rejects(Source(jsonl, cols))
    assert [(r.id, r.metadata) for r in rows] == [("5", {"n": -(2**53), "s": "fine"})]
    assert [(r.row, r.field) for r in rejects] == [(1, "n"), (2, "s"), (3, "s"), (4, "n"), (6, "n")]
    assert "UTF-8" in rejects[1].reason and "UTF-8" in rejects[2].reason
    typed = ColumnMap(id="id", text="{t}", metadata=parse_metadata_spec("n:int,s"))
    assert [r.row for r in rows_and_rejects(Source(jsonl, typed))[1]] == [1, 2, 3, 4, 6]


def test_json_nested_too_deeply_is_a_reject(tmp_path: Path) -> None:
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"id": "1", "t": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"id": 2, "t": "b"}\n'
    )
    rows, rejects = rows_and_rejects(Source(jsonl, ColumnMap(id="id", text="{t}")))
    assert [r.id for r in rows] == ["2"]
    assert _only_reject(rejects).row == 1 and "JSON" in rejects[0].reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(10**30), 10**30) | st.integers(-(2**53), 2**53), min_size=1))
def test_an_int_column_keeps_exact_ints_and_rejects_the_rest(values: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        body = "".join(f"{i},t{i},{v},Drama\n" for i, v in enumerate(values))
        rows, rejects = rows_and_rejects(Source(movies_csv(Path(tmp), body), MOVIES))
    fits = [abs(v) <= 2**53 for v in values]
    assert [(r.id, r.metadata["year"]) for r in rows] == [
        (str(i), v) for i, v in enumerate(values) if fits[i]
    ]
    assert [(r.row, r.field) for r in rejects] == [
        (i + 2, "year") for i in range(len(values)) if not fits[i]
    ]


def test_repeated_list_cells_give_each_record_its_own_list(tmp_path: Path) -> None:
    """List cells are split once per distinct cell in a chunk; every record still gets the
    items as `split_list` makes them, in a list of its own, and blank optional cells stay
    left out."""
    body = "".join(f"{i},T{i},1995, Drama | |Crime \n" for i in range(1, 5)) + "5,T5,,\n"
    rows, rejects = rows_and_rejects(Source(movies_csv(tmp_path, body), MOVIES))
    assert not rejects
    assert [r.metadata.get("genres") for r in rows] == [["Drama", "Crime"]] * 4 + [None]
    assert rows[4].metadata == {"title": "T5"}
    assert len({id(r.metadata["genres"]) for r in rows[:4]}) == 4
    rows[0].metadata["genres"].append("changed")
    assert rows[1].metadata["genres"] == ["Drama", "Crime"]


PIECES = st.sampled_from(
    ["a", "é", " ", ",", '"', '""', "\n", "\r\n", "\r", "\x00", "\ufeff", "x" * 40, "\udce9"]
)


def reader_outcomes(text: str, size: int = 256) -> list[tuple[int, str]]:
    """The previous reader's rules, record by record (the oracle): each record's starting
    line and "ok", or the reason the reader rejected it; blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    width, line, out = len(next(reader)), 1, []
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            line = reader.line_num
            out.append((start, f"unparseable CSV: {exc}"))
            continue
        line = reader.line_num
        if not values or (values == [""] and width > 1):
            continue
        ok = len(values) == width
        out.append((start, "ok" if ok else f"{len(values)} fields where the header has {width}"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=8).map("".join), min_size=1, max_size=12), st.data())
def test_csv_records_keep_their_lines_and_rejects(lines: list[str], data) -> None:
    """Chunks of records parsed at once give each record the line and the reader's reject
    that reading it alone gives: quoted cells spanning lines (CR, LF, CRLF), blank lines,
    ragged rows, NUL bytes, a stray quote, a field beyond the parser's limit, any chunk size."""
    text = "id,t\n" + "".join(lines)
    size = data.draw(st.integers(1, 5))
    limit = csv.field_size_limit(30)  # a field of "x" * 40 is one the parser refuses
    try:
        want = reader_outcomes(text)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.csv"
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
            try:
                items = read_all(Source(path, ColumnMap(id="id", text="{t}")), size)
            except CatalogError as exc:  # no record below the header
                assert want == [] and "no rows" in str(exc)
                return
    finally:
        csv.field_size_limit(limit)
    got = [
        (item.row, item.reason if isinstance(item, Reject) and item.field is None else "ok")
        for item in items
    ]
    assert got == want
