"""Each vector space's catalog as the app shows it: item ids, their metadata and images.

Which items a store holds, and the catalog file they came from, are found in the manifest
`embedrec ingest` keeps for each (catalog, store) pair; the metadata is read back from the
store itself, so labels and filter fields are exactly what a filter sees. Images are the
catalog file's image column (PNG bytes, or paths relative to the file). A store no manifest
describes falls back to the ids the caller knows (for instance the rated items).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from embedrec.data.tables import CatalogError, read_table
from embedrec.ingestion.manifest import ingested_catalog
from embedrec.stores import VectorStore

FETCH_CHUNK = 1_000
MAX_OPTIONS = 60
"""A string field with more distinct values than this is a label, not a filter choice."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")

FieldKind = Literal["list", "int", "float", "str", "bool"]


@dataclass(frozen=True)
class FieldSpec:
    """A metadata field and its kind, as the filter editor offers it."""

    name: str
    kind: FieldKind
    options: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


@dataclass
class DisplayCatalog:
    space: str
    ids: list[str]
    metadata: dict[str, dict[str, Any]]
    images: dict[str, bytes | Path] = field(default_factory=dict)
    source: Path | None = None
    """The catalog file the store was ingested from, when a manifest names it."""

    @cached_property
    def label_field(self) -> str | None:
        """The string field with the most distinct values (a title, a name), if any."""
        counts: dict[str, set[Any]] = {}
        for meta in self.metadata.values():
            for key, value in meta.items():
                if isinstance(value, str):
                    counts.setdefault(key, set()).add(value)
        return max(counts, key=lambda k: len(counts[k]), default=None)

    def label(self, item_id: str) -> str:
        name = self.label_field
        value = self.metadata.get(item_id, {}).get(name) if name else None
        return f"{item_id} · {value}" if value else item_id

    @cached_property
    def fields(self) -> list[FieldSpec]:
        return field_specs(self.metadata.values())

    def image(self, item_id: str) -> bytes | None:
        found = self.images.get(item_id)
        if isinstance(found, Path):
            return found.read_bytes() if found.is_file() else None
        return found


def field_specs(rows: Iterable[dict[str, Any]]) -> list[FieldSpec]:
    """The fields of `rows` with the kind their values share; a field whose values mix
    kinds, or a string field with too many values to choose from, is left out."""
    values: dict[str, list[Any]] = {}
    for meta in rows:
        for key, value in meta.items():
            values.setdefault(key, []).append(value)
    specs = []
    for name, seen in values.items():
        spec = _spec(name, seen)
        if spec is not None:
            specs.append(spec)
    return specs


def _spec(name: str, seen: list[Any]) -> FieldSpec | None:
    if all(isinstance(v, list) for v in seen):
        options = sorted({str(x) for v in seen for x in v})
        return FieldSpec(name, "list", tuple(options)) if options else None
    if all(isinstance(v, bool) for v in seen):
        return FieldSpec(name, "bool")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        kind: FieldKind = "int" if all(isinstance(v, int) for v in seen) else "float"
        return FieldSpec(name, kind, low=min(seen), high=max(seen))
    if all(isinstance(v, str) for v in seen):
        options = sorted(set(seen))
        return FieldSpec(name, "str", tuple(options)) if len(options) <= MAX_OPTIONS else None
    return None


def catalog_images(path: Path, ids: Sequence[str]) -> dict[str, bytes | Path]:
    """id -> image from the catalog file's image column (the first whose values are PNG
    bytes or image file paths); empty when the file has none. The id column is the first
    column whose values include the given ids."""
    try:
        frame = read_table(path)  # a .tsv as TSV, every cell as text
    except CatalogError:  # gone since the ingest, or named so its format cannot be told
        return {}
    wanted = set(ids)
    id_col = next((c for c in frame.columns if wanted & set(frame[c].astype(str))), None)
    image_col = next((c for c in frame.columns if _is_image_column(frame[c])), None)
    if id_col is None or image_col is None:
        return {}
    out: dict[str, bytes | Path] = {}
    for item_id, value in zip(frame[id_col].astype(str), frame[image_col], strict=True):
        if isinstance(value, bytes):
            out[item_id] = value
        elif isinstance(value, str):
            out[item_id] = path.parent / value
    return out


def _is_image_column(values: pd.Series) -> bool:
    sample = values.dropna().head(20).tolist()
    return bool(sample) and all(
        isinstance(v, bytes) or (isinstance(v, str) and v.lower().endswith(IMAGE_SUFFIXES))
        for v in sample
    )


def fetch_metadata(store: VectorStore, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), FETCH_CHUNK):
        for record in store.fetch(list(ids[start : start + FETCH_CHUNK])):
            out[record.id] = dict(record.metadata or {})
    return out


def load_catalog(space: str, store: VectorStore, known_ids: Sequence[str] = ()) -> DisplayCatalog:
    """The catalog of the store serving `space`; `known_ids` stand in for a manifest."""
    found = ingested_catalog(store.uri)
    source, ids = found if found is not None else (None, list(known_ids))
    metadata = fetch_metadata(store, ids)
    ids = [i for i in ids if i in metadata]
    images = catalog_images(source, ids) if source is not None else {}
    return DisplayCatalog(space, ids, metadata, images, source)
