"""TOML config files -> validated pydantic models.

One file may hold the sections of several commands; each command reads the sections it
needs and ignores none: an unknown section or key is an error that names it. A relative
path (or a store URI's path) in a config file is taken from the file's folder
(`from_config_folder`); one given on the command line from the working directory. Errors
about such a file say which key of which config named it (`named_by`).

Each room keeps its own sections' models beside its code (ingestion/config.py, data/config.py,
eval/*/config.py, retrieval/config.py, stores/recall/calibrate.py); docs/config.md lists them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo

M = TypeVar("M", bound=BaseModel)
V = TypeVar("V", Path, str)


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
    from_command_line: Collection[str] = (),
) -> M:
    """`model` from `data`, or a `ConfigFileError` naming each bad key as `[section] key`,
    with the command-line flag that sets it where `flags` ("section.key" -> flag) has one.
    `config_file` and `from_command_line` (the "section.key"s whose values came from flags)
    reach the models' validators, for `from_config_folder`."""
    context = {"config_file": config_file, "from_command_line": frozenset(from_command_line)}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigFileError(f"{origin}: {_problems(exc, flags or {})}") from None


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file{named_by(path)}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into `model` (every command's config goes through here)."""
    return validate(read_toml(path), model, str(path), config_file=Path(path))


_NAMED_BY: dict[str, str] = {}
"""A path (or store URI) read from a config file -> "[section] key in CONFIG", for error
messages (kept out of the models, whose equality is their values)."""


def _join_path(path: Path, folder: Path) -> Path:
    return Path(os.path.normpath(folder / path.expanduser()))


def from_config_folder(
    value: V | None,
    info: ValidationInfo,
    key: str,
    join: Callable[[V, Path], V] = _join_path,  # type: ignore[assignment]
) -> V | None:
    """`value` of the config key `key` ("section.key"), with a relative path taken from the
    config file's folder by `join` (for a `Path`: joined to it; a store URI has its own).
    A value given on the command line, or validated without a file, stays as it is. The
    key it came from is remembered for errors (`named_by`)."""
    context = info.context or {}
    config = context.get("config_file")
    if value is None or config is None or key in context.get("from_command_line", ()):
        return value
    # absolute, so that a config written elsewhere (by `tune`) reads back the same; the
    # folder as named (a symlinked configs/ is taken where it is linked, not followed)
    joined = join(value, Path(os.path.abspath(config)).parent)
    note_origin(joined, key, config)
    return joined


def note_origin(value: Path | str, key: str, config: Path | str) -> None:
    """Remember that `value` came from `key` ("section.key" or "key") of the file `config`."""
    section, _, name = key.rpartition(".")
    _NAMED_BY[str(value)] = f"[{section}] {name} in {config}" if section else f"{key} in {config}"


def named_by(value: Path | str) -> str:
    """ " (from [source] path in CONFIG)" for a value a config file named, else "": the tail
    of an error about that file or store."""
    where = _NAMED_BY.get(str(value))
    return f" (from {where})" if where else ""
