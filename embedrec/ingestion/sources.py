"""Catalog files read in chunks through a column mapping: CSV/TSV, Parquet and JSONL.

Every record becomes a `Row` (row number, id, the input to embed, metadata) or a `Reject`
naming the file, row, field and reason (see rows.py). Problems with the file as a whole (an
empty file, a header with no rows, a missing id column, a header or schema without a column
the mapping names) raise `CatalogError` before any row is read, or at the end for a file with
no rows. JSONL has no header: a record without a column is that record's problem alone.

Row numbers are what a user finds in an editor: for CSV/TSV the line a record starts on
(the header is line 1), for JSONL its line, for Parquet its 1-based position.

Metadata values come out as str, int, float, bool or list of str, the only types a store
holds. Nulls: an empty CSV cell, a JSON null or a Parquet null leaves the key out of that
record's metadata (a store holds no nulls; an absent key is what `$exists` tests), unless
the column is declared required (`year:int!`), which rejects the row instead. Nested
objects and lists of anything but strings are rejected.

Image columns hold a path (relative to the catalog file's folder) or the image's bytes; the
row carries the bytes, which the embedder decodes only for the rows it embeds, so that an
unchanged catalog is never decoded again.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import IO, Any, NoReturn

from embedrec.common.config import named_by
from embedrec.data.tables import CatalogError, Format, detect_format
from embedrec.ingestion.columns import ColumnMap
from embedrec.ingestion.rows import Reject, Row, RowBuilder

RawRecord = tuple[int, Mapping[str, Any] | list[str] | Reject]
"""What the JSONL and Parquet readers yield: a row number and the raw record, or a Reject
for an unreadable one."""
Numbered = tuple[list[int], list[Any]]
"""A chunk of records and the row number of each: a record is a mapping, a CSV record its
list of cells in the order of the header (`RowBuilder.header`), or a Reject."""

__all__ = ["Source"]


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
            raise CatalogError(str(self.path), f"no such file{named_by(self.path)}")

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, format={self.format!r})"

    def estimate_rows(self) -> int | None:
        """Rows in the file, cheaply: exact for Parquet, a line count otherwise."""
        if self.format == "parquet":
            import pyarrow.parquet as pq  # loaded for Parquet catalogs only

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
        builder = RowBuilder(self.path, self.columns)
        if self.format in ("csv", "tsv"):
            numbered = self._csv(size, builder)
        else:
            reader = self._jsonl if self.format == "jsonl" else self._parquet
            numbered = _grouped(reader(size, builder), size)
        for rows, records in numbered:
            yield _built(builder, rows, records)

    # -- readers: (row number, record or Reject) one at a time, CSV a chunk at a time ----------

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

    def _csv_header(self, reader: Any) -> list[str]:
        try:
            header = next(reader, None)
        except csv.Error as exc:
            self._fail(f"unreadable header: {exc}", row=1)
        if header is None or not any(h.strip() for h in header):
            self._fail("the file is empty: no header row", row=1)
        header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            self._fail(f"the header names {duplicated[0]!r} twice", row=1, field=duplicated[0])
        self._check_columns(header, self.columns.columns(), "the header")
        return header

    def _csv(self, size: int, builder: RowBuilder) -> Iterator[Numbered]:
        """Up to `size` records at a time, parsed by the csv module in one call; each
        record's line is worked out from the lines the chunk took (one a record, unless a
        quoted cell holds line breaks). A record the parser refuses ends its chunk early."""
        rows = 0
        with self._open_text() as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            header = builder.header = self._csv_header(reader)
            line = reader.line_num
            while True:
                records: list[Any] = []
                error: csv.Error | None = None
                try:
                    records.extend(islice(reader, size))  # what it read stays on an error
                except csv.Error as exc:
                    error = exc
                if not records and error is None:
                    break
                starts = _starts(records, line, reader.line_num if error is None else None)
                chunk = self._checked(starts, records, len(header))
                if error is not None:  # the refused record starts where the last one ended
                    start = _ends_at(starts, records, line) + 1
                    reason = f"unparseable CSV: {error}"
                    chunk = (
                        [*chunk[0], start],
                        [*chunk[1], Reject(str(self.path), start, None, None, reason)],
                    )
                line = reader.line_num
                rows += len(chunk[0])
                if chunk[0]:  # not blank lines alone
                    yield chunk
        if rows == 0:
            self._fail("the header has no rows below it", row=2)

    def _checked(self, starts: Sequence[int], records: list[Any], width: int) -> Numbered:
        """The chunk without its blank lines, a record with as many fields as the header or
        a Reject saying how many it has."""
        if set(map(len, records)) <= {width}:  # the usual chunk: no blank, none ragged
            return list(starts), records
        rows: list[int] = []
        out: list[Any] = []
        for start, values in zip(starts, records, strict=True):
            if not values or (values == [""] and width > 1):
                continue
            if len(values) != width:
                reason = f"{len(values)} fields where the header has {width}"
                values = Reject(str(self.path), start, None, None, reason)
            rows.append(start)
            out.append(values)
        return rows, out

    def _jsonl(self, size: int, builder: RowBuilder) -> Iterator[RawRecord]:
        """Each line one object; a missing column is that record's reject, never the file's,
        since JSONL has no header that would make it the file's."""
        file = str(self.path)
        rows = 0
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
                except (ValueError, RecursionError) as exc:
                    reason = f"not valid JSON: {exc}" if isinstance(exc, ValueError) else ""
                    reason = reason or "not readable JSON: nested too deeply"
                    yield line_no, Reject(file, line_no, None, None, reason)
                    continue
                if not isinstance(record, dict):
                    kind = type(record).__name__
                    yield line_no, Reject(file, line_no, None, None, f"a {kind}, not an object")
                    continue
                yield line_no, record
        if rows == 0:
            self._fail("the file is empty: no records", row=1)

    def _parquet(self, size: int, builder: RowBuilder) -> Iterator[RawRecord]:
        import pyarrow as pa  # loaded for Parquet catalogs only
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


def _grouped(items: Iterator[RawRecord], size: int) -> Iterator[Numbered]:
    """A reader's records, `size` at a time."""
    while chunk := list(islice(items, size)):
        rows, records = zip(*chunk, strict=True)
        yield list(rows), list(records)


def _starts(records: list[list[str]], line: int, end: int | None) -> Sequence[int]:
    """The line each record starts on, the first just after `line`: one line each, plus one
    for each line break in a quoted cell (as the csv module counts lines: a CR, an LF, or a
    CRLF). `end`: the line the records end on, when known."""
    if end is not None and end - line == len(records):
        return range(line + 1, end + 1)
    starts: list[int] = []
    for values in records:
        starts.append(line + 1)
        text = ",".join(values)
        line += 1 + text.count("\n") + text.count("\r") - text.count("\r\n")
    return starts


def _ends_at(starts: Sequence[int], records: list[list[str]], line: int) -> int:
    """The line the last of the records ends on (`line` where there is none)."""
    if not records:
        return line
    text = ",".join(records[-1])
    return starts[-1] + text.count("\n") + text.count("\r") - text.count("\r\n")


def _built(builder: RowBuilder, rows: list[int], records: list[Any]) -> list[Row | Reject]:
    """The chunk's records built (`RowBuilder.build_many`), in place among its rejects."""
    if Reject not in set(map(type, records)):
        return builder.build_many(rows, records, builder.header)
    good = [(row, rec) for row, rec in zip(rows, records, strict=True) if type(rec) is not Reject]
    built = iter(builder.build_many([r for r, _ in good], [rec for _, rec in good], builder.header))
    return [rec if type(rec) is Reject else next(built) for rec in records]
