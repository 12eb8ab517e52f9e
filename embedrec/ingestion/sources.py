"""Catalog files read in chunks through a column mapping: CSV/TSV, Parquet and JSONL.

Every record becomes a `Row` (row number, id, the input to embed, metadata) or a `Reject`
naming the file, row, field and reason. Problems with the file as a whole (an empty file, a
header with no rows, a missing id column, a template naming an absent column) raise
`CatalogError` before any row is read, or at the end for a file with no rows.

Row numbers are what a user finds in an editor: for CSV/TSV the line a record starts on
(the header is line 1), for JSONL its line, for Parquet its 1-based position.

Metadata values come out as str, int, float, bool or list of str, the only types a store
holds. Nulls: an empty CSV cell, a JSON null or a Parquet null leaves the key out of that
record's metadata (a store holds no nulls; an absent key is what `$exists` tests), unless
the column is declared required (`year:int!`), which rejects the row instead. Nested
objects and lists of anything but strings are rejected.

Image columns hold a path (relative to the catalog file's folder) or the image's bytes; the
row carries the bytes, which the pipeline decodes only for the rows it embeds, so that an
unchanged catalog is never decoded again.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

from embedrec.stores.base import MetadataValue

Format = Literal["csv", "tsv", "jsonl", "parquet"]
MetaType = Literal["auto", "str", "int", "float", "bool", "list"]
META_TYPES: tuple[str, ...] = ("auto", "str", "int", "float", "bool", "list")
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NOT_UTF8 = re.compile("[\ud800-\udfff]")  # undecodable bytes and lone surrogates
_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")


class CatalogError(ValueError):
    """A catalog that cannot be read at all; names the file, row and field where it can."""

    def __init__(self, file: str, reason: str, *, row: int | None = None, field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, reason
        where = file + (f", row {row}" if row is not None else "")
        where += f", field {field!r}" if field is not None else ""
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Row:
    row: int
    id: str
    payload: str | bytes
    """The text to embed, or the image's encoded bytes."""
    metadata: dict[str, MetadataValue]


@dataclass(frozen=True, slots=True)
class Reject:
    file: str
    row: int
    id: str | None
    field: str | None
    reason: str

    def message(self) -> str:
        where = f"{self.file}, row {self.row}"
        where += f" (id {self.id!r})" if self.id is not None else ""
        where += f", field {self.field!r}" if self.field is not None else ""
        return f"{where}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "row": self.row,
            "id": self.id,
            "field": self.field,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class MetaField:
    name: str
    type: MetaType = "auto"
    required: bool = False


def parse_metadata_spec(spec: str | Sequence[str]) -> tuple[MetaField, ...]:
    """`"title,year:int,genres:list!"` (or the same as a list) -> metadata fields.

    Types: str, int, float, bool, list (of str; a CSV cell is split on the list separator)
    and auto (the default: strings from CSV, the value's own type from JSONL and Parquet).
    A trailing `!` makes the column required: a null or empty value rejects the row.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    fields: list[MetaField] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        required = item.endswith("!")
        name, _, kind = item.rstrip("!").partition(":")
        name, kind = name.strip(), (kind.strip() or "auto")
        if not name:
            raise ValueError(f"metadata column {item!r} has no name")
        if kind not in META_TYPES:
            raise ValueError(
                f"metadata column {name!r}: unknown type {kind!r}; use {', '.join(META_TYPES)}"
            )
        if any(f.name == name for f in fields):
            raise ValueError(f"metadata column {name!r} is named twice")
        fields.append(MetaField(name, kind, required))  # type: ignore[arg-type]
    return tuple(fields)


def template_fields(template: str) -> tuple[str, ...]:
    """Column names a text template such as `"{title} ({year}): {genres}"` refers to."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"text template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(
                f"text template {template!r}: {{{name}}} has a format spec or conversion; "
                "every cell is text, so name the column alone, e.g. {price}"
            )
        if not name or name.isdigit() or not re.fullmatch(r"[^.\[\]]+", name):
            raise ValueError(
                f"text template {template!r}: every placeholder must name a column, "
                f"e.g. {{title}}; got {{{name}}}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"text template {template!r} names no column")
    return tuple(names)


@dataclass(frozen=True)
class ColumnMap:
    """Which columns make a record: its id, what to embed (a text template or an image
    column, exactly one), and the metadata to store."""

    id: str
    text: str | None = None
    image: str | None = None
    metadata: tuple[MetaField, ...] = ()
    list_sep: str = "|"
    text_fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ValueError("a catalog needs exactly one of a text template or an image column")
        if not self.list_sep:
            raise ValueError("the list separator may not be empty")
        object.__setattr__(self, "text_fields", template_fields(self.text) if self.text else ())

    @property
    def modality(self) -> str:
        return "text" if self.text is not None else "image"

    def required_columns(self) -> list[str]:
        """Columns every record must have: the id and what is embedded."""
        return [self.id, *(self.text_fields or (self.image,))]  # type: ignore[list-item]

    def columns(self) -> list[str]:
        names = [*self.required_columns(), *(f.name for f in self.metadata)]
        return list(dict.fromkeys(names))


class _Invalid(Exception):
    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_utf8(name: str, value: Any) -> None:
    if isinstance(value, str) and _NOT_UTF8.search(value):
        raise _Invalid(name, "holds bytes that are not valid UTF-8")
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(name, "holds bytes that are not valid UTF-8") from None


def _as_text(name: str, value: Any) -> str:
    _check_utf8(name, value)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list, tuple)) for v in value):
            raise _Invalid(name, "a nested list or object cannot go into the text")
        return ", ".join(str(v) for v in value if v is not None)
    if isinstance(value, dict):
        raise _Invalid(name, "a nested object cannot go into the text")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _convert(f: MetaField, value: Any, list_sep: str) -> MetadataValue:
    """One metadata value of `f.type`; strings are parsed, other values must already fit."""
    name, kind = f.name, f.type
    if isinstance(value, bytes):
        _check_utf8(name, value)
        value = value.decode("utf-8")
    _check_utf8(name, value)
    if isinstance(value, dict):
        raise _Invalid(name, "nested objects are not allowed in metadata")
    if isinstance(value, (list, tuple)):
        if kind not in ("auto", "list"):
            raise _Invalid(name, f"expected {kind}, got a list")
        bad = next((v for v in value if not isinstance(v, str)), None)
        if bad is not None or any(v is None for v in value):
            raise _Invalid(name, f"lists may hold only strings, found {type(bad).__name__} {bad!r}")
        for v in value:
            _check_utf8(name, v)
        return list(value)
    text = value.strip() if isinstance(value, str) else None
    if kind == "auto":
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid(name, f"{value} is not a finite number")
        if not isinstance(value, (str, int, float, bool)):
            raise _Invalid(name, f"unsupported type {type(value).__name__} {value!r}")
        return value
    if kind == "str":
        if text is None:
            raise _Invalid(name, f"expected str, got {type(value).__name__} {value!r}")
        return value
    if kind == "list":
        if text is None:
            raise _Invalid(name, f"expected a list of str, got {type(value).__name__} {value!r}")
        return [part.strip() for part in text.split(list_sep) if part.strip()]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise _Invalid(name, f"expected bool, got {value!r}")
    if isinstance(value, bool):
        raise _Invalid(name, f"expected {kind}, got bool {value!r}")
    number: int | float
    try:
        number = float(text) if text is not None else float(value)
    except (TypeError, ValueError):
        raise _Invalid(name, f"expected {kind}, got {value!r}") from None
    if not math.isfinite(number):
        raise _Invalid(name, f"{value!r} is not a finite number")
    if kind == "float":
        return number
    if not number.is_integer():
        raise _Invalid(name, f"expected int, got {value!r}")
    if text is not None:
        try:
            return int(text)
        except ValueError:
            return int(number)
    return int(value)


class _RowBuilder:
    """Turns one raw record (column -> value) into a Row or a Reject."""

    def __init__(self, source: Source):
        self.source = source
        self.columns = source.columns
        self.file = str(source.path)
        self.seen: dict[str, int] = {}

    def build(self, row: int, record: Mapping[str, Any]) -> Row | Reject:
        cols = self.columns
        rid: str | None = None
        try:
            rid = self._id(record)
            first = self.seen.get(rid)
            if first is not None:
                raise _Invalid(cols.id, f"duplicate id, first seen at row {first}")
            payload = self._text(record) if cols.text is not None else self._image(record)
            metadata = self._metadata(record)
        except _Invalid as bad:
            return Reject(self.file, row, rid, bad.field, bad.reason)
        self.seen[rid] = row
        return Row(row, rid, payload, metadata)

    def _id(self, record: Mapping[str, Any]) -> str:
        name = self.columns.id
        if name not in record:
            raise _Invalid(name, "the id is missing")
        value = record[name]
        _check_utf8(name, value)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            kind = "null" if value is None else type(value).__name__
            raise _Invalid(name, f"ids are strings or integers, got {kind} {value!r}")
        rid = value.strip() if isinstance(value, str) else str(value)
        if not rid:
            raise _Invalid(name, "the id is empty")
        return rid

    def _text(self, record: Mapping[str, Any]) -> str:
        values: dict[str, str] = {}
        for name in self.columns.text_fields:  # absent is empty, as a null or an empty cell
            values[name] = _as_text(name, record.get(name))
        if all(not v.strip() for v in values.values()):
            names = ", ".join(self.columns.text_fields)
            raise _Invalid(names, "empty text: every column of the text template is empty")
        return self.columns.text.format_map(values).strip()  # type: ignore[union-attr]

    def _image(self, record: Mapping[str, Any]) -> bytes:
        name = self.columns.image
        assert name is not None
        value = record.get(name)
        if _is_blank(value):
            raise _Invalid(name, "no image: the cell is empty")
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise _Invalid(name, f"expected an image path or bytes, got {type(value).__name__}")
        _check_utf8(name, value)
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else self.source.path.parent / path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _Invalid(name, f"image file not found: {path}") from None
        except OSError as exc:
            raise _Invalid(name, f"cannot read image file {path}: {exc.strerror or exc}") from None
        if not data:
            raise _Invalid(name, f"image file {path} is empty")
        return data

    def _metadata(self, record: Mapping[str, Any]) -> dict[str, MetadataValue]:
        out: dict[str, MetadataValue] = {}
        for f in self.columns.metadata:
            value = record.get(f.name)
            if isinstance(value, float) and math.isnan(value):
                value = None
            if _is_blank(value):
                if f.required:
                    raise _Invalid(f.name, "null or empty, and the column is required")
                continue
            converted = _convert(f, value, self.columns.list_sep)
            if converted == [] and f.required:
                raise _Invalid(f.name, "empty list, and the column is required")
            out[f.name] = converted
        return out


def detect_format(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in SUFFIXES:
        return SUFFIXES[suffixes[-1]]
    raise CatalogError(
        str(path),
        f"cannot tell the format from the name; use one of {', '.join(sorted(SUFFIXES))} "
        "or give the format",
    )


class Source:
    """A catalog file and its column mapping. `chunks(n)` reads it n records at a time."""

    def __init__(
        self,
        path: str | Path,
        columns: ColumnMap,
        *,
        format: Format | None = None,
        delimiter: str | None = None,
    ):
        self.path = Path(path)
        self.columns = columns
        self.format: Format = format or detect_format(self.path)
        if self.format not in ("csv", "tsv", "jsonl", "parquet"):
            raise CatalogError(str(self.path), f"unknown format {self.format!r}")
        self.delimiter = delimiter or ("\t" if self.format == "tsv" else ",")
        if not self.path.is_file():
            raise CatalogError(str(self.path), "no such file")

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, format={self.format!r})"

    def estimate_rows(self) -> int | None:
        """Rows in the file, cheaply: exact for Parquet, a line count otherwise."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                return pq.ParquetFile(self.path).metadata.num_rows
            except Exception:
                return None
        lines = 0
        with self._open_binary() as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines += block.count(b"\n")
        return max(lines - (self.format in ("csv", "tsv")), 0)

    def chunks(self, size: int = 256) -> Iterator[list[Row | Reject]]:
        if size < 1:
            raise ValueError(f"chunk size must be positive, got {size}")
        builder = _RowBuilder(self)
        reader = {"jsonl": self._jsonl, "parquet": self._parquet}.get(self.format, self._csv)
        chunk: list[Row | Reject] = []
        for row, record in reader(size):
            chunk.append(record if isinstance(record, Reject) else builder.build(row, record))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # -- readers: yield (row number, record or Reject) ---------------------------------------

    def _fail(self, reason: str, *, row: int | None = None, field: str | None = None) -> NoReturn:
        raise CatalogError(str(self.path), reason, row=row, field=field)

    def _check_columns(self, present: Sequence[str], names: Sequence[str], where: str) -> None:
        for name in names:
            if name not in present:
                use = "id column" if name == self.columns.id else "column"
                if name in self.columns.text_fields:
                    use = f"column named in the text template {self.columns.text!r}"
                elif name == self.columns.image:
                    use = "image column"
                elif any(f.name == name for f in self.columns.metadata):
                    use = "metadata column"
                self._fail(
                    f"no {use} {name!r}; {where} has: {', '.join(map(repr, present))}",
                    row=1,
                    field=name,
                )

    def _open_binary(self) -> IO[bytes]:
        if self.path.suffix.lower() == ".gz":
            return gzip.open(self.path, "rb")
        return self.path.open("rb")

    def _open_text(self) -> IO[str]:
        return io.TextIOWrapper(
            self._open_binary(), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )

    def _csv(self, size: int) -> Iterator[tuple[int, Mapping[str, Any] | Reject]]:
        file = str(self.path)
        with self._open_text() as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                self._fail(f"unreadable header: {exc}", row=1)
            if header is None or not any(h.strip() for h in header):
                self._fail("the file is empty: no header row", row=1)
            header = [h.strip() for h in header]  # type: ignore[union-attr]
            duplicated = sorted({h for h in header if header.count(h) > 1})
            if duplicated:
                self._fail(f"the header names {duplicated[0]!r} twice", row=1, field=duplicated[0])
            self._check_columns(header, self.columns.columns(), "the header")
            rows = 0
            line = reader.line_num
            while True:
                start = line + 1
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    line = reader.line_num
                    rows += 1
                    yield start, Reject(file, start, None, None, f"unparseable CSV: {exc}")
                    continue
                line = reader.line_num
                if not values or (values == [""] and len(header) > 1):
                    continue
                rows += 1
                if len(values) != len(header):
                    reason = f"{len(values)} fields where the header has {len(header)}"
                    yield start, Reject(file, start, None, None, reason)
                    continue
                yield start, dict(zip(header, values, strict=True))
        if rows == 0:
            self._fail("the header has no rows below it", row=2)

    def _jsonl(self, size: int) -> Iterator[tuple[int, Mapping[str, Any] | Reject]]:
        file = str(self.path)
        rows = 0
        checked = False
        with self._open_binary() as fh:
            for line_no, raw in enumerate(fh, start=1):
                text = raw.decode("utf-8", errors="surrogateescape").strip()
                if line_no == 1:
                    text = text.removeprefix("\ufeff")
                if not text:
                    continue
                rows += 1
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    yield line_no, Reject(file, line_no, None, None, f"not valid JSON: {exc}")
                    continue
                if not isinstance(record, dict):
                    kind = type(record).__name__
                    yield line_no, Reject(file, line_no, None, None, f"a {kind}, not an object")
                    continue
                if not checked:
                    self._check_columns(list(record), self.columns.required_columns(), "it")
                    checked = True
                yield line_no, record
        if rows == 0:
            self._fail("the file is empty: no records", row=1)

    def _parquet(self, size: int) -> Iterator[tuple[int, Mapping[str, Any] | Reject]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            self._fail(f"not a readable Parquet file: {exc}")
        names = parquet.schema_arrow.names
        self._check_columns(names, self.columns.columns(), "the schema")
        if parquet.metadata.num_rows == 0:
            self._fail("the file has a schema and no rows", row=1)
        row = 0
        for batch in parquet.iter_batches(batch_size=size, columns=self.columns.columns()):
            data = {name: batch.column(name).to_pylist() for name in batch.schema.names}
            for i in range(batch.num_rows):
                row += 1
                yield row, {name: values[i] for name, values in data.items()}
