"""The README's front door stays true: its runnable shell blocks run, the system packages it
lists are the ones the set-up script installs, and its "three things to try" are the ones the
demo ends with.

A block is runnable when its fence's info string is `bash runnable`; it runs with bash in an
empty folder, with `embedrec` on the PATH and EMBEDREC_CACHE in a temporary folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from embedrec.demo import NEXT_STEPS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(info: str) -> list[str]:
    return [body for head, body in FENCE.findall(README) if head.strip() == info]


def front_door() -> str:
    """The README up to its command-line reference: what a newcomer reads first."""
    return README.split("\n## The command line", 1)[0]


def test_the_readme_has_runnable_blocks_that_use_the_commands() -> None:
    runnable = blocks("bash runnable")
    assert runnable, "no ```bash runnable block in README.md"
    assert any("embedrec ingest" in b and "embedrec query" in b for b in runnable)


def test_the_front_door_names_every_system_package_the_set_up_installs() -> None:
    script = (REPO / "scripts" / "setup-system.sh").read_text(encoding="utf-8")
    packages = re.findall(r"^\s+need (\S+) ", script, re.MULTILINE)
    assert "dataset-fashion-mnist" in packages
    missing = [p for p in packages if f"`{p}`" not in front_door()]
    assert not missing, f"README's front door does not name {missing}"


def test_the_three_things_to_try_are_the_ones_the_demo_prints() -> None:
    door = front_door()
    for why, command in NEXT_STEPS:
        assert f"# {NEXT_STEPS.index((why, command)) + 1}. {why}\n{command}\n" in door


@pytest.mark.slow  # loads the text model in each command: ~30-60 s
@pytest.mark.parametrize("block", blocks("bash runnable"))
def test_a_runnable_block_runs(block: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["EMBEDREC_CACHE"] = str(tmp_path / "cache")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout}\n{done.stderr}"
    assert "error" not in done.stderr.lower(), done.stderr
    # the queries answered: each prints its table, with a first hit
    queries = block.count("embedrec query")
    assert done.stdout.count("top ") == done.stdout.count("│ 1 │") == queries, done.stdout
