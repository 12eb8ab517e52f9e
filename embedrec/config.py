"""TOML config files -> validated pydantic models.

One file may hold the sections of several commands; each command reads the sections it
needs and ignores none: an unknown section or key is an error that names it. Paths in a
config are taken relative to the working directory, as they are on the command line.

Sections (add a model and a field on `Config` for a new command's section):

    [source]    the catalog file (or a packaged dataset) and its column mapping
    [embedder]  which embedder turns rows into vectors
    [store]     the vector store URI
    [ingest]    batching, checkpoints, rejects, sync
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; names the file and key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Section):
    """A catalog file, or `dataset` (exported to a catalog under the cache on first use)."""

    path: Path | None = None
    dataset: Literal["movielens", "fashion-mnist"] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    """With `dataset`: export only the first `limit` records."""
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = None
    delimiter: str | None = None
    id: str
    text: str | None = None
    image: str | None = None
    metadata: list[str] = []
    """Columns to store, each `name`, `name:type` or `name:type!` (required); types: auto,
    str, int, float, bool, list."""
    list_sep: str = "|"

    @model_validator(mode="after")
    def _one_of(self) -> SourceConfig:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path or dataset")
        if self.limit is not None and self.dataset is None:
            raise ValueError("limit applies to a dataset only")
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of text (a template) or image (a column)")
        return self

    @field_validator("metadata", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class EmbedderConfig(Section):
    spec: str = "text"
    """`text`, `text:MODEL` (a name or a folder), `image`, `image:...` (see embedrec.embedders)."""
    device: str | None = None
    """auto, cpu, cuda, cuda:N or mps; unset: the spec's `?device=`, else auto."""
    batch_size: Annotated[int, Field(ge=1)] | None = None


class StoreConfig(Section):
    uri: str


class IngestConfig(Section):
    batch_size: Annotated[int, Field(ge=1)] = 256
    """Rows embedded together; upserts go in batches of at most the store's max_batch."""
    checkpoint_seconds: Annotated[float, Field(ge=0)] = 5.0
    """Least time between checkpoints (store flushed, manifest committed); they are also
    spaced 20x their own cost apart so that flushing stays ~5% of a run."""
    rejects: Path | None = None
    """JSONL file of rejected rows; default beside the manifest (the summary prints it)."""
    max_rejects: Annotated[int, Field(ge=0)] | None = None
    """Abort once more rows than this are rejected; default: no limit."""
    sync: bool = False
    """Delete from the store the ids that left the catalog."""


class Config(Section):
    source: SourceConfig | None = None
    embedder: EmbedderConfig = EmbedderConfig()
    store: StoreConfig | None = None
    ingest: IngestConfig = IngestConfig()


def _problem(err: dict, flags: Mapping[str, str]) -> str:
    section, *rest = [str(p) for p in err["loc"]] or [""]
    key = ".".join(rest)
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r} in [{section}]" if key else f"unknown section [{section}]"
    where = f"[{section}] {key}" if key else f"[{section}]" if section else "top level"
    flag = flags.get(f"{section}.{key}")
    return f"{where}: {err['msg']}" + (f" (give {flag})" if flag else "")


def _problems(exc: ValidationError, flags: Mapping[str, str]) -> str:
    return "; ".join(_problem(err, flags) for err in exc.errors())


def parse_config(
    data: dict, origin: str = "<config>", flags: Mapping[str, str] | None = None
) -> Config:
    return validate(data, Config, origin, flags)


def validate(
    data: dict,
    model: type[M],
    origin: str = "<config>",
    flags: Mapping[str, str] | None = None,
) -> M:
    """`model` from `data`, or a `ConfigFileError` naming each bad key as `[section] key`,
    with the command-line flag that sets it where `flags` ("section.key" -> flag) has one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(f"{origin}: {_problems(exc, flags or {})}") from None


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into `model` (every command's config goes through here)."""
    return validate(read_toml(path), model, str(path))


def load_config(path: str | Path) -> Config:
    return load_model(path, Config)
