"""A newcomer's machine: what `scripts/setup-system.sh --check` says, and what the demo skips,
when a system package is missing (the dataset folder pointed at an empty one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from embedrec import demo
from embedrec.common import settings
from embedrec.data import fashion_mnist

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "setup-system.sh"
FASHION_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
TOOLS = ["wrk", "docker-compose", "chromium", "redis-server"]


def _bin(folder: Path, tools: list[str]) -> Path:
    """A PATH folder holding stand-ins for `tools` (the script only asks whether they exist)."""
    folder.mkdir()
    for tool in tools:
        (folder / tool).write_text("#!/bin/sh\nexit 0\n")
        (folder / tool).chmod(0o755)
    return folder


def _check(fashion_dir: Path, path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": os.environ.get("HOME", "/"), "LANG": "C"}
    env[settings.FASHION_MNIST_DIR_ENV] = str(fashion_dir)
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=30
    )


def test_check_names_what_is_missing_and_the_command(tmp_path: Path) -> None:
    empty = tmp_path / "fashion"
    empty.mkdir()
    proc = _check(empty, _bin(tmp_path / "bin", ["wrk", "chromium"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "dataset-fashion-mnist: Fashion-MNIST for demo step 2 and the image tests" in out
    assert f"(looked for in {empty} from EMBEDREC_FASHION_MNIST_DIR;" in out
    assert "docker-compose: validating docker-compose.yml" in out
    assert "wrk:" not in out and "chromium:" not in out  # present: not reported
    # PATH holds no apt-get: the message says what to do on a system without it
    assert "no apt-get here" in out and "EMBEDREC_FASHION_MNIST_DIR" in out
    assert "skip only what needs them" in out


def test_check_with_apt_prints_the_one_command(tmp_path: Path) -> None:
    empty = tmp_path / "fashion"
    empty.mkdir()
    tools = ["wrk", "chromium", "docker-compose", "redis-server", "apt-get"]
    proc = _check(empty, _bin(tmp_path / "bin", tools))
    assert proc.returncode == 1
    assert "install them with: sudo scripts/setup-system.sh" in proc.stdout
    assert "apt-get install --no-install-recommends dataset-fashion-mnist)" in proc.stdout


def test_check_passes_when_everything_is_there(tmp_path: Path) -> None:
    data = tmp_path / "fashion"
    data.mkdir()
    for name in FASHION_FILES:
        (data / name).write_bytes(b"")
    proc = _check(data, _bin(tmp_path / "bin", TOOLS))
    assert proc.returncode == 0, proc.stdout
    assert "every system package the demo and the tests use is installed" in proc.stdout
    (data / FASHION_FILES[-1]).unlink()  # one of the four files gone is a missing package
    assert _check(data, tmp_path / "bin").returncode == 1


@pytest.fixture
def no_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No system copy of Fashion-MNIST, an empty cache, and no network."""
    empty = tmp_path / "no-fashion"
    empty.mkdir()
    monkeypatch.setenv(settings.FASHION_MNIST_DIR_ENV, str(empty))
    monkeypatch.setenv(settings.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    return empty


def test_demo_skips_only_the_fashion_step(
    no_fashion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = demo.missing_data()
    assert list(missing) == [demo.FASHION]
    assert "`sudo apt-get install dataset-fashion-mnist`" in missing[demo.FASHION]
    assert "sudo scripts/setup-system.sh" in missing[demo.FASHION]
    ran: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        ran.append(argv)
        return 0

    steps = demo.plan(tmp_path / "work", 100)
    done = [demo.run_step(step, missing, runner) for step in steps]
    assert [s.needs for s, ok in zip(steps, done, strict=True) if not ok] == [demo.FASHION]
    assert [argv[1] for argv in ran] == [
        "configs/movielens.toml",
        "configs/sequence.toml",
        "configs/movielens.toml",
    ]
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "skipped: Fashion-MNIST file" in out
    assert f"not found in {no_fashion}" in out
    assert "install it with `sudo apt-get install dataset-fashion-mnist`" in out
    assert "`sudo scripts/setup-system.sh` installs all the demo and the tests use" in out


def test_demo_tour_leaves_out_the_image_space_without_fashion(
    no_fashion: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert demo.serve_config({}).image is not None
    config = demo.serve_config(demo.missing_data())
    assert config.image is None and config.text is not None and config.two_tower is not None


def test_a_failing_step_stops_the_demo(tmp_path: Path) -> None:
    step = demo.plan(tmp_path, 10)[0]
    with pytest.raises(SystemExit, match="`embedrec ingest` failed with exit code 2"):
        demo.run_step(step, {}, lambda argv: 2)


def test_install_as_root_updates_once_and_installs_only_what_is_missing(tmp_path: Path) -> None:
    """Install mode, with stand-ins for `id` (root) and `apt-get` that log their calls and
    "install" a package by creating what the check looks for."""
    data = tmp_path / "fashion"
    data.mkdir()
    path = _bin(tmp_path / "bin", ["wrk", "chromium", "redis-server"])
    log = tmp_path / "apt.log"
    (path / "id").write_text("#!/bin/sh\necho 0\n")
    (path / "apt-get").write_text(
        f"""#!/bin/bash
echo "$*" >> {log}
for arg; do
  case "$arg" in
    dataset-fashion-mnist) for f in {" ".join(FASHION_FILES)}; do : > {data}/$f; done ;;
    docker-compose) {shutil.which("cp")} -p {path}/wrk {path}/docker-compose ;;
  esac
done
"""
    )
    for tool in ("id", "apt-get"):
        (path / tool).chmod(0o755)
    env = {"PATH": str(path), settings.FASHION_MNIST_DIR_ENV: str(data), "LANG": "C"}
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert calls == [
        "update -qq",
        "install -y -qq --no-install-recommends dataset-fashion-mnist docker-compose",
    ]
    assert "missing" not in proc.stdout  # everything is there afterwards: nothing to report
    rerun = subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and len(log.read_text().splitlines()) == 2  # no apt-get
