"""The one table reader: a CSV, TSV, JSONL or Parquet file (optionally gzipped) into a frame.

The format comes from the caller or from the file's name (`SUFFIXES`: a `.tsv` is read as
TSV, a `.csv.gz` as gzipped CSV). CSV and TSV cells are read as text by default, and only an
empty cell is missing (a cell reading "NA" or "null" is kept as that text). Ingestion's
chunked catalog reader (ingestion/sources.py) streams the same formats by the same rules;
every other reader of a table calls `read_table`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd

from embedrec.common.config import named_by

Format = Literal["csv", "tsv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "tsv", "jsonl", "parquet")
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

__all__ = ["FORMATS", "SUFFIXES", "CatalogError", "Format", "detect_format", "read_table"]


class CatalogError(ValueError):
    """A table that cannot be read at all; names the file, row and field where it can."""

    def __init__(self, file: str, reason: str, *, row: int | None = None, field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, reason
        where = file + (f", row {row}" if row is not None else "")
        where += f", field {field!r}" if field is not None else ""
        super().__init__(f"{where}: {reason}")


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


def read_table(
    path: str | Path,
    format: Format | None = None,
    *,
    delimiter: str | None = None,
    dtype: Any = str,
) -> pd.DataFrame:
    """The whole file as a frame. `dtype` applies to CSV/TSV cells (`str`: all text; a dict:
    those columns as text, the rest inferred); JSONL and Parquet keep their own types."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(str(path), f"no such file{named_by(path)}")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise CatalogError(str(path), f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        if fmt in ("csv", "tsv"):
            sep = delimiter or ("\t" if fmt == "tsv" else ",")
            return pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=False, na_values=[""])
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CatalogError(str(path), f"cannot read it as {fmt}: {exc}") from None
