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
from pathlib import Path
from typing import IO, Any, NoReturn

from embedrec.common.config import named_by
from embedrec.data.tables import CatalogError, Format, detect_format
from embedrec.ingestion.columns import ColumnMap
from embedrec.ingestion.rows import Reject, Row, RowBuilder

RawRecord = tuple[int, Mapping[str, Any] | list[str] | Reject]
"""What a reader yields: a row number and the raw record, or a Reject for an unreadable one.
A CSV record is its list of cells, in the order of the header (`RowBuilder.header`)."""

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
        reader = {"jsonl": self._jsonl, "parquet": self._parquet}.get(self.format, self._csv)
        raw: list[RawRecord] = []
        for item in reader(size, builder):
            raw.append(item)
            if len(raw) >= size:
                yield _built(builder, raw)
                raw = []
        if raw:
            yield _built(builder, raw)

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

    def _csv(self, size: int, builder: RowBuilder) -> Iterator[RawRecord]:
        file = str(self.path)
        rows = 0
        with self._open_text() as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            header = builder.header = self._csv_header(reader)
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
                yield start, values
        if rows == 0:
            self._fail("the header has no rows below it", row=2)

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


def _built(builder: RowBuilder, raw: list[RawRecord]) -> list[Row | Reject]:
    """The chunk's records built (`RowBuilder.build_many`), in place among its rejects."""
    good = [(row, rec) for row, rec in raw if not isinstance(rec, Reject)]
    rows, records = [row for row, _ in good], [rec for _, rec in good]
    built = iter(builder.build_many(rows, records, builder.header))  # type: ignore[arg-type]
    return [rec if isinstance(rec, Reject) else next(built) for _, rec in raw]
