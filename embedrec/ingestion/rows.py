"""What a catalog record becomes: a `Row` to embed and store, or a `Reject` that says why not.

`RowBuilder` applies the column mapping to one raw record (column -> value). Every
per-record problem, including a metadata value the stores would refuse (an integer beyond
the range they keep exactly, a string that is not valid UTF-8), rejects that record alone,
so one bad value never stops an ingest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrec.ingestion.columns import ColumnMap
from embedrec.ingestion.values import InvalidValue, as_text, check_utf8, convert, is_blank
from embedrec.stores.base import MetadataValue


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


class RowBuilder:
    """Turns one raw record (column -> value) of `file` into a Row or a Reject."""

    def __init__(self, file: Path, columns: ColumnMap):
        self.folder = file.parent
        self.columns = columns
        self.file = str(file)
        self.seen: dict[str, int] = {}

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
