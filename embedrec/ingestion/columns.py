"""The column mapping of a catalog: its id, what to embed, and the typed metadata to store."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MetaType = Literal["auto", "str", "int", "float", "bool", "list"]
META_TYPES: tuple[str, ...] = ("auto", "str", "int", "float", "bool", "list")


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

    @property
    def input_field(self) -> str:
        """The column(s) the embedded input comes from, as a reject names them."""
        return self.image if self.image is not None else ", ".join(self.text_fields)

    def required_columns(self) -> list[str]:
        """Columns every record must have: the id and what is embedded."""
        return [self.id, *(self.text_fields or (self.image,))]  # type: ignore[list-item]

    def columns(self) -> list[str]:
        names = [*self.required_columns(), *(f.name for f in self.metadata)]
        return list(dict.fromkeys(names))

    def declared_kinds(self) -> dict[str, str]:
        """Metadata field -> kind for every column with a declared type (not auto), as
        `VectorStore.declare_fields` takes them."""
        return {f.name: f.type for f in self.metadata if f.type != "auto"}
