"""docs/config.md is generated from the config models: it fails here when it is stale."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_config_md_is_current() -> None:
    expected = _script().render()
    actual = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/config.md is stale: run python scripts/config_reference.py"


def test_every_command_and_the_keys_the_issue_named_are_there() -> None:
    text = _script().render()
    for title in ("## ingest", "## train, evaluate, tune", "## bench", "## serve", "## calibrate",
                  "## drift"):  # fmt: skip
        assert title in text
    for key in ("`weight`", "`buckets`", "`width`", "`splits`", "`path`", "`uri`"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {key} |"))
        assert not row.endswith("|  |"), f"{key} has no meaning: {row}"


def test_every_key_has_a_meaning() -> None:
    bare, rows, where = [], 0, ""
    for line in _script().render().splitlines():
        if line.startswith(("## ", "### ")):
            where = line.lstrip("# ")
        elif line.startswith("| `"):
            rows += 1
            if line.endswith("|  |"):
                bare.append(f"{where} {line.split(' |')[0].strip('| ')}")
    assert rows > 100 and not bare, f"keys without a meaning (a docstring under the field): {bare}"
