"""TOML config files -> validated pydantic models.

One file may hold the sections of several commands; each command reads the sections it
needs and ignores none: an unknown section or key is an error that names it. The `[data]`
tables' paths are taken from the config file's folder (data/config.py); other paths in a
config from the working directory, as they are on the command line (docs/config.md).

Each room keeps its own sections' models beside its code (ingestion/config.py, data/config.py,
eval/*/config.py, retrieval/config.py, stores/recall/calibrate.py); docs/config.md lists them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; names the file and key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def validate(
    data: dict,
    model: type[M],
    origin: str = "<config>",
    *,
    config_file: Path | None = None,
    flags: Mapping[str, str] | None = None,
) -> M:
    """`model` from `data`, or a `ConfigFileError` naming each bad key as `[section] key`,
    with the command-line flag that sets it where `flags` ("section.key" -> flag) has one.
    `config_file` reaches the models' validators (as `info.context["config_file"]`), for
    the sections whose paths are taken from the config file's folder."""
    try:
        return model.model_validate(data, context={"config_file": config_file})
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
    return validate(read_toml(path), model, str(path), config_file=Path(path))
