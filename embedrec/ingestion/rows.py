"""What a catalog record becomes: a `Row` to embed and store, or a `Reject` that says why not.

`RowBuilder` applies the column mapping to one raw record (column -> value). Every
per-record problem, including a metadata value the stores would refuse (an integer beyond
the range they keep exactly, a string that is not valid UTF-8), rejects that record alone,
so one bad value never stops an ingest.

`build_many` builds a chunk of records a column at a time where every cell it reads is a
string (every CSV cell), by the same rules: a record whose cells it cannot take as plain
(blank, unconvertible, a duplicate id) goes through `build`, which gives its Row or Reject.
Its rows keep their metadata in the chunk's columns (`ChunkMetadata`): a record's dict is
made when read, and the pipeline hands the store a batch's metadata as columns.
"""

from __future__ import annotations

import math
import operator
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from embedrec.ingestion.columns import ColumnMap, MetaField
from embedrec.ingestion.values import (
    InvalidValue,
    as_text,
    check_utf8,
    column_jsons,
    convert,
    is_blank,
    metadata_json,
    plain_column,
)
from embedrec.stores.base import MetadataValue
from embedrec.stores.text import encodable

IRREGULAR = object()
"""A cell `build_many` leaves to `build` (its record is built alone)."""
ABSENT = object()
"""A blank metadata cell of an optional column: the key is left out."""


class ChunkMetadata:
    """The metadata of a chunk `build_many` built, as its columns: a record's dict is made
    only when something reads it (`Row.metadata`), and the store takes a batch's records
    as columns (`columns`), so that the usual ingest makes no dict per record."""

    __slots__ = ("names", "odd", "values")

    def __init__(self, names: list[str], values: list[list[Any]], odd: set[int]) -> None:
        self.names = names
        self.values = values
        """Per name, each record's value: ABSENT where a record of `odd` lacks it."""
        self.odd = odd

    def record(self, i: int) -> dict[str, MetadataValue]:
        meta = {name: column[i] for name, column in zip(self.names, self.values, strict=True)}
        if i in self.odd:
            return {name: value for name, value in meta.items() if value is not ABSENT}
        return meta

    def columns(self, at: list[int]) -> dict[str, list[Any]]:
        """The records `at` as columns: {name: a value per record, None where it has none}."""
        out = {name: list(map(column.__getitem__, at)) for name, column in self.items()}
        if self.odd and not self.odd.isdisjoint(at):
            for column in out.values():
                if ABSENT in column:
                    column[:] = [None if value is ABSENT else value for value in column]
        return out

    def items(self) -> zip[tuple[str, list[Any]]]:
        return zip(self.names, self.values, strict=True)


class Row(NamedTuple):
    """One catalog record to embed and store. A named tuple, so that `build_many` makes a
    chunk's rows in one C-level pass (`tuple.__new__` over the zipped columns) rather than
    a Python `__init__` call each (about 2 µs a row as a dataclass)."""

    row: int
    id: str
    payload: str | bytes
    """The text to embed, or the image's encoded bytes."""
    meta: dict[str, MetadataValue] | ChunkMetadata
    """The metadata (`metadata`), or the chunk's it is record `at` of."""
    metadata_json: str | None = None
    """`metadata` as the content hash takes it (values.py), where `build_many` made it
    a column at a time; None: made from `metadata` when needed. Not compared."""
    at: int = -1
    """Its place in its chunk (`meta` a ChunkMetadata)."""

    @property
    def metadata(self) -> dict[str, MetadataValue]:
        meta = self.meta
        return meta.record(self.at) if isinstance(meta, ChunkMetadata) else meta

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self[:3] == other[:3] and self.metadata == other.metadata

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # its metadata is a dict


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


class RowBuilder:
    """Turns one raw record (column -> value) of `file` into a Row or a Reject."""

    def __init__(self, file: Path, columns: ColumnMap):
        self.folder = file.parent
        self.columns = columns
        self.file = str(file)
        self.seen: dict[str, int] = {}
        self.header: list[str] | None = None
        """Set by a CSV reader: its records are lists of cells in this order."""
        self.render = _positional(columns.text).format if columns.text is not None else None
        """The text template with its columns by position: `render(*cells)`."""

    def build_many(
        self,
        rows: Sequence[int],
        records: Sequence[Mapping[str, Any]] | Sequence[Sequence[str]],
        header: Sequence[str] | None = None,
    ) -> list[Row | Reject]:
        """`[build(row, record) ...]` for a chunk, a column at a time where it can. With a
        `header` (CSV), each record is its list of cells in the header's order, and each
        column read is taken out in one pass; a record built alone is made a mapping then."""
        cols = self.columns
        if header is not None:
            at = {name: i for i, name in enumerate(header)}
            cells = {
                name: list(map(itemgetter(at[name]), records)) if name in at else ()
                for name in cols.columns()
            }  # the columns it reads alone, each in one pass
        else:
            cells = {name: [rec.get(name) for rec in records] for name in cols.columns()}

        def alone(i: int) -> Row | Reject:
            record = records[i]
            if header is not None:
                record = dict(zip(header, record, strict=True))
            return self.build(rows[i], record)  # type: ignore[arg-type]

        if self.render is None or not all(map(_plain_strings, cells.values())):
            return [alone(i) for i in range(len(rows))]
        ids = list(map(str.strip, cells[cols.id]))
        text_cells = [cells[name] for name in cols.text_fields]
        texts = list(map(str.strip, map(self.render, *text_cells)))
        names = [f.name for f in cols.metadata]
        odd: set[int] = set()  # records with a blank optional cell
        redo = _blank_texts(text_cells)
        values = [_plain_column(f, cells[f.name], cols.list_sep, odd, redo) for f in cols.metadata]
        metas = ChunkMetadata(names, values, odd)
        jsons = _jsons(metas, len(ids), redo)
        seen = self.seen
        if not redo and all(ids) and len(set(ids)) == len(ids) and seen.keys().isdisjoint(ids):
            seen.update(zip(ids, rows, strict=True))
            fields = zip(rows, ids, texts, repeat(metas), jsons, count(), strict=False)
            return list(map(tuple.__new__, repeat(Row), fields))
        out: list[Row | Reject] = []
        for i, rid in enumerate(ids):
            if i in redo or not rid or rid in seen:
                out.append(alone(i))
                continue
            seen[rid] = rows[i]
            out.append(Row(rows[i], rid, texts[i], metas, jsons[i], i))
        return out

    def build(self, row: int, record: Mapping[str, Any]) -> Row | Reject:
        cols = self.columns
        rid: str | None = None
        try:
            rid = self._id(record)
            first = self.seen.get(rid)
            if first is not None:
                raise InvalidValue(cols.id, f"duplicate id, first seen at row {first}")
            payload = self._text(record) if cols.text is not None else self._image(record)
            metadata = self._metadata(record)
        except InvalidValue as bad:
            return Reject(self.file, row, rid, bad.field, bad.reason)
        self.seen[rid] = row
        return Row(row, rid, payload, metadata)

    def _id(self, record: Mapping[str, Any]) -> str:
        name = self.columns.id
        if name not in record:
            raise InvalidValue(name, "the id is missing")
        value = record[name]
        check_utf8(name, value)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            kind = "null" if value is None else type(value).__name__
            raise InvalidValue(name, f"ids are strings or integers, got {kind} {value!r}")
        rid = value.strip() if isinstance(value, str) else str(value)
        if not rid:
            raise InvalidValue(name, "the id is empty")
        return rid

    def _text(self, record: Mapping[str, Any]) -> str:
        names = self.columns.text_fields
        values = {name: as_text(name, record.get(name)) for name in names}  # absent reads empty
        if not "".join(values.values()).strip():  # every column is empty or blank
            absent = [name for name in names if name not in record]
            reason = "empty text: every column of the text template is empty"
            if absent:
                reason += f" (absent from this record: {', '.join(absent)})"
            raise InvalidValue(", ".join(names), reason)
        return self.columns.text.format_map(values).strip()  # type: ignore[union-attr]

    def _image(self, record: Mapping[str, Any]) -> bytes:
        name = self.columns.image
        assert name is not None
        value = record.get(name)
        if is_blank(value):
            raise InvalidValue(name, "no image: the cell is empty")
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise InvalidValue(name, f"expected an image path or bytes, got {type(value).__name__}")
        check_utf8(name, value)
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else self.folder / path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidValue(name, f"image file not found: {path}") from None
        except OSError as exc:
            raise InvalidValue(
                name, f"cannot read image file {path}: {exc.strerror or exc}"
            ) from None
        if not data:
            raise InvalidValue(name, f"image file {path} is empty")
        return data

    def _metadata(self, record: Mapping[str, Any]) -> dict[str, MetadataValue]:
        out: dict[str, MetadataValue] = {}
        for f in self.columns.metadata:
            value = record.get(f.name)
            if is_blank(value) or (isinstance(value, float) and math.isnan(value)):
                if f.required:
                    raise InvalidValue(f.name, "null or empty, and the column is required")
                continue
            converted = convert(f, value, self.columns.list_sep)
            if f.required and converted == []:
                raise InvalidValue(f.name, "empty list, and the column is required")
            out[f.name] = converted
        return out


def _positional(template: str) -> str:
    """`template` with each `{name}` made positional (`{0}`...) in `template_fields` order."""
    order: dict[str, int] = {}
    parts: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            parts.append(f"{{{order.setdefault(name, len(order))}}}")
    return "".join(parts)


def _jsons(metas: ChunkMetadata, n: int, redo: set[int]) -> list[str | None]:
    """Each record's metadata JSON, a column at a time (`column_jsons`); a record that lacks
    a key (`odd`) gets its own dict's, one built alone (`redo`) None (made when needed).
    Their cells are stood in for, in copies of the columns, by another record's value, so
    that each column stays of one kind (the passes in C)."""
    skip = metas.odd | redo
    if not skip:
        return column_jsons(dict(metas.items()), n)  # type: ignore[return-value]
    fine = next((i for i in range(n) if i not in skip), None)
    if fine is None:
        return [None if i in redo else metadata_json(metas.record(i)) for i in range(n)]
    columns: dict[str, list[Any]] = {}
    for name, column in metas.items():
        columns[name] = column = column.copy()
        for i in skip:
            column[i] = column[fine]
    jsons: list[str | None] = column_jsons(columns, n)  # type: ignore[assignment]
    for i in skip:
        jsons[i] = None if i in redo else metadata_json(metas.record(i))
    return jsons


def _plain_strings(cells: list[Any]) -> bool:
    """Every cell is a str, and all of them can be written as UTF-8."""
    if set(map(type, cells)) != {str}:
        return False
    return all(map(str.isascii, cells)) or encodable("".join(cells))


def _blank_texts(text_cells: list[Sequence[str]]) -> set[int]:
    """The records whose every text column is blank (none where a column has no blank)."""
    if any(all(map(str.strip, column)) for column in text_cells):
        return set()
    return {i for i, t in enumerate(zip(*text_cells, strict=True)) if not "".join(t).strip()}


def _plain_column(
    f: MetaField, cells: Sequence[str], list_sep: str, odd: set[int], redo: set[int]
) -> list[Any]:
    """The metadata values of a column of strings as `_metadata` converts them: ABSENT for
    a blank optional cell (its index added to `odd`), IRREGULAR where it would reject or
    needs a closer look (its index added to `redo`). The column is converted in passes that
    run in C (`plain_column`), its blank cells stood in for by another cell; only the
    blank and the irregular cells are then looked at one by one."""
    blank: list[int] = []
    if not all(map(str.strip, cells)):
        blank = list(compress(count(), map(operator.not_, map(str.strip, cells))))
    if len(blank) == len(cells):
        stand_in: Sequence[str] = ()
    elif blank:
        filler = next(cell for cell in cells if cell.strip())
        stand_in = list(cells)
        for i in blank:
            stand_in[i] = filler
    else:
        stand_in = cells
    out = plain_column(f.type, list_sep)(stand_in) if stand_in else [None] * len(cells)
    if None in out or (f.required and [] in out):
        skip = set(blank)
        for i, value in enumerate(out):
            if i not in skip and (value is None or (f.required and value == [])):
                redo.add(i)
                out[i] = IRREGULAR
    for i in blank:
        (redo if f.required else odd).add(i)
        out[i] = IRREGULAR if f.required else ABSENT
    return out
