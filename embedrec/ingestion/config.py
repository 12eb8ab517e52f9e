"""The config file of `embedrec ingest`: its sections as validated models.

[source]    the catalog file (or a packaged dataset) and its column mapping
[embedder]  which embedder turns rows into vectors
[store]     the vector store URI
[ingest]    batching, checkpoints, rejects, sync
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from embedrec.common.config import Section, from_config_folder, load_model, validate
from embedrec.data.registry import known_dataset
from embedrec.embedders.batching import check_batch_size
from embedrec.stores.uri import located_in


class SourceConfig(Section):
    """A catalog file, or `dataset` (exported to a catalog under the cache on first use)."""

    path: Path | None = None
    """The catalog file; a relative path is taken from the config file's folder."""
    dataset: str | None = None
    """A packaged dataset (`embedrec datasets list`), exported to a catalog under the cache."""
    limit: Annotated[int, Field(ge=1)] | None = None
    """With `dataset`: export only the first `limit` records."""
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = None
    """csv, tsv, jsonl or parquet (default: from the file name, optionally .gz)."""
    delimiter: str | None = None
    """CSV/TSV field separator (default: by format)."""
    id: str
    """The column holding each record's id."""
    text: str | None = None
    """The text to embed: a template over columns, e.g. "{title} {genres}"."""
    image: str | None = None
    """The column holding an image path (relative to the catalog's folder) or bytes."""
    metadata: list[str] = Field(default_factory=list)
    """Columns to store, each `name`, `name:type` or `name:type!` (required); types: auto,
    str, int, float, bool, list."""
    list_sep: str = "|"
    """The separator of list cells in CSV/TSV."""

    @model_validator(mode="after")
    def _one_of(self) -> SourceConfig:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path or dataset")
        if self.limit is not None and self.dataset is None:
            raise ValueError("limit applies to a dataset only")
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of text (a template) or image (a column)")
        return self

    @field_validator("dataset")
    @classmethod
    def _packaged(cls, value: str | None) -> str | None:
        return None if value is None else known_dataset(value)

    @field_validator("path")
    @classmethod
    def _from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, "source.path")

    @field_validator("metadata", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class EmbedderConfig(Section):
    spec: str = "text"
    """`text`, `text:MODEL` (a name or a folder), `image`, `image:...`, `two-tower:PATH` (see
    embedrec.embedders). A two-tower model's relative path, and a model folder written
    `./...` or `../...`, are taken from the config file's folder."""

    @field_validator("spec")
    @classmethod
    def _from_config_folder(cls, value: str, info: ValidationInfo) -> str:
        return from_config_folder(value, info, "embedder.spec", spec_located_in)

    device: str | None = None
    """auto, cpu, cuda, cuda:N or mps; unset: the spec's `?device=`, else auto."""
    batch_size: int | Literal["auto"] | None = None
    """Items the text or image embedder runs through its model at once, within each
    [ingest] batch: a number, or auto (64 texts or 32 images on a CPU; on CUDA the size that
    fits and still gains throughput, probed once per model and device); unset: the spec's
    `?batch_size=`, else auto. Whatever the size, a batch that runs out of GPU memory is
    split and retried. On a GPU, raise [ingest] batch_size too: a model batch is at most one
    ingest batch."""

    @field_validator("batch_size", mode="before")
    @classmethod
    def _number_or_auto(cls, value: object) -> object:
        return None if value is None else check_batch_size(value)


def spec_located_in(spec: str, folder: Path) -> str:
    """`spec` with its model path taken from `folder`: a two-tower spec's relative path, or
    any spec's path written `./...` or `../...` (a bare `text:NAME` may be a hub name)."""
    kind, colon, rest = spec.partition(":")
    location, question, query = rest.partition("?")
    if not colon or not (kind == "two-tower" or location.startswith(("./", "../"))):
        return spec
    if not location or location.startswith(("/", "~")):
        return spec
    return f"{kind}:{os.path.normpath(folder / location)}{question}{query}"


class StoreConfig(Section):
    uri: str
    """The store, e.g. `faiss:./data/movies?index=HNSW32` (docs/stores.md); a relative path
    in it is taken from the config file's folder."""

    @field_validator("uri")
    @classmethod
    def _from_config_folder(cls, value: str, info: ValidationInfo) -> str:
        return from_config_folder(value, info, "store.uri", located_in)


PERCENT = r"^\s*(100(\.0+)?|\d{1,2}(\.\d+)?)\s*%$"
"""A share from 0% to 100%."""


class IngestConfig(Section):
    batch_size: Annotated[int, Field(ge=1)] = 256
    """Rows embedded together; upserts go in batches of at most the store's max_batch."""
    checkpoint_seconds: Annotated[float, Field(ge=0)] = 5.0
    """Least time between checkpoints (store flushed, manifest committed); they are also
    spaced 20x their own cost apart so that flushing stays ~5% of a run."""
    rejects: Path | None = None
    """JSONL file of rejected rows; default beside the manifest (the summary prints it)."""
    max_rejects: Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=PERCENT)] | None = None
    """N: abort once more than N rows are rejected; "P%": fail the run (exit 1) when more
    than P% of the rows read were rejected, judged at its end; default: no limit."""
    sync: bool = False
    """Delete from the store the ids that left the catalog."""

    @field_validator("rejects")
    @classmethod
    def _from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, "ingest.rejects")


class IngestFile(Section):
    """A config file of `embedrec ingest`."""

    source: SourceConfig | None = None
    embedder: EmbedderConfig = EmbedderConfig()
    store: StoreConfig | None = None
    ingest: IngestConfig = IngestConfig()


def parse_ingest_config(
    data: dict,
    origin: str = "<config>",
    flags: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    from_command_line: Collection[str] = (),
) -> IngestFile:
    """`data` as an ingest config: the file's sections with the flags laid over them
    (`from_command_line`: the "section.key"s the flags gave, whose paths stay relative to
    the working directory)."""
    return validate(
        data, IngestFile, origin, config_file=config_file, flags=flags,
        from_command_line=from_command_line,
    )  # fmt: skip


def load_ingest_config(path: str | Path) -> IngestFile:
    return load_model(path, IngestFile)
