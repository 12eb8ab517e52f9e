"""The README's front door stays true: its runnable shell blocks run, the system packages it
lists are the ones the set-up script installs, and its "three things to try" are the ones the
demo ends with.

A block is runnable when its fence's info string is `bash runnable` or `python runnable`; it
runs in an empty folder, with `embedrec` on the PATH and EMBEDREC_CACHE in a temporary
folder. A `bash demo` or `python demo` block runs as written from a folder laid out as a
clone after `make demo` (configs/, docs/ and ./data/demo; the two-tower model trained for 2
epochs rather than 40, to keep the test short)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedrec.cli import main as cli
from embedrec.demo import NEXT_STEPS, TEXT_QUERY, plan

REPO = Path(__file__).resolve().parents[1]
EXPECTED_TOP5 = {
    TEXT_QUERY: [
        "Interview with the Vampire",
        "Dracula: Dead and Loving It",
        "Bram Stoker's Dracula",
    ],
    "an animated musical for children": ["Lion King, The", "Fantasia"],
}
"""The README's example searches of the movie text space, and titles each must return."""
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


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_block(info: str, block: str, cwd: Path, env: dict[str, str]) -> str:
    """Run one README block as written; its stdout, after checking it succeeded."""
    argv = ["bash", "-euo", "pipefail", "-c", block]
    if info.startswith("python"):
        argv = [sys.executable, "-c", block]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout}\n{done.stderr}"
    assert "error" not in done.stderr.lower(), done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a clone is after `make demo`: configs/, docs/ and ./data/demo, built by
    the demo's own steps (`plan`) with 300 images and a 2-epoch model."""
    root = tmp_path_factory.mktemp("clone")
    for name in ("configs", "docs"):
        (root / name).symlink_to(REPO / name)
    work = root / "data" / "demo"
    work.mkdir(parents=True)
    quick = root / "sequence.quick.toml"
    text = (REPO / "configs" / "sequence.toml").read_text(encoding="utf-8")
    assert "\nepochs = 30\n" in text
    quick.write_text(text.replace("\nepochs = 30\n", "\nepochs = 2\n"), encoding="utf-8")
    assert cli(["train", str(quick), "--out", str(work / "sequence.pt"), "--quiet"]) == 0
    for step in plan(work, images=300):
        assert cli([*step.argv, "--quiet"]) == 0, step.title
    return root


def test_the_readme_names_its_example_searches() -> None:
    for query in EXPECTED_TOP5:
        assert query in README, f"README does not show the search {query!r}"
    assert f"--text '{TEXT_QUERY}'" in front_door()
    assert blocks("bash demo") and blocks("python demo") and blocks("python runnable")


@pytest.mark.slow  # loads the text model once per python block
@pytest.mark.parametrize("block", blocks("python runnable"))
def test_a_runnable_python_block_runs(block: str, tmp_path: Path) -> None:
    out = run_block("python", block, tmp_path, environment(EMBEDREC_CACHE=str(tmp_path / "c")))
    assert out.strip(), "the example prints nothing"


@pytest.mark.slow  # builds the demo's stores (a 2-epoch model) and loads the models
def test_the_demo_examples_run_and_return_the_titles_named(demo_folder: Path) -> None:
    """The front door's first command, the demo blocks (an image search with the shipped
    sample, the Python client) as written, and the README's searches' expected titles."""
    env = environment()
    out = run_block("bash", NEXT_STEPS[0][1], demo_folder, env)
    for title in EXPECTED_TOP5[TEXT_QUERY]:
        assert title in out, f"{NEXT_STEPS[0][1]}\n{out}"
    for block in blocks("bash demo"):
        assert "│ 1 │" in run_block("bash", block, demo_folder, env)
    (python,) = blocks("python demo")
    out = run_block("python", python, demo_folder, env)
    assert out.count("Results(") == python.count("print(rec."), out
    assert all(t in out for t in EXPECTED_TOP5["an animated musical for children"]), out
    from embedrec import open_store
    from embedrec.embedders import get_embedder

    store = open_store(f"faiss:{demo_folder}/data/demo/movies-text")
    vectors = get_embedder("text").embed(list(EXPECTED_TOP5))
    for (query, titles), hits in zip(EXPECTED_TOP5.items(), store.search(vectors, 5), strict=True):
        found = [h.metadata["title"] for h in hits]
        assert set(titles) <= set(found), (query, found)


@pytest.mark.slow  # builds a 200-customer shop, trains on it (~1 min), ingests its catalog
def test_the_own_data_walkthrough_runs_and_serves(tmp_path: Path, monkeypatch) -> None:
    """The README's path from `train` through `ingest --embedder two-tower:PATH` to `serve`:
    the commands as written, then its request to the service over the same serve config."""
    from starlette.testclient import TestClient

    from embedrec.retrieval.api import create_app
    from embedrec.retrieval.client import Recommender

    # a copy, not a link: a config's [data] paths are taken from its own folder, resolved
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "tests").symlink_to(REPO / "tests")
    (shop,) = blocks("bash shop")
    run_block("bash", shop, tmp_path, environment())
    summary = json.loads((tmp_path / "models" / "data_summary.json").read_text())
    assert summary["items_without_interactions"], summary
    serve = next(b for b in blocks("bash") if "configs/shop_serve.toml" in b)
    body = json.loads(re.search(r"-d '(\{.*\})'", serve).group(1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDREC_API_KEY", raising=False)
    rec = Recommender.from_config("configs/shop_serve.toml")
    try:
        answer = TestClient(create_app(rec, api_key=None)).post("/recommend", json=body)
    finally:
        rec.close()
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["source"] == "features" and got["missing_features"] == ["birth_year"]
    assert len(got["results"]) == body["k"]
    assert not {h["id"] for h in got["results"]} & set(summary["items_without_interactions"])
