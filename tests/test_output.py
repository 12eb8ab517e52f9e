"""What the long commands print, and where: in a log (no carriage-return frames, the header
first), on a terminal (a bar), with --json (one parsable summary on stdout) and --quiet
(nothing but errors). The ingests here embed with a hash, not a model, to stay fast."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedrec.embedders
from embedrec.cli import main
from embedrec.common.output import format_duration, format_rate
from embedrec.eval.models.toml_write import dumps

REPO = Path(__file__).resolve().parents[1]
ROWS = 40


class HashEmbedder:
    """Text -> a unit vector seeded by its hash: an embedder with no model to load."""

    name = "test-hash"
    dim = 8
    modality = "text"

    def prepare(self, row: Any) -> str:
        return row.payload

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in batch]
        vectors = np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def hash_embedder(spec: str, **kw: Any) -> HashEmbedder:
    return HashEmbedder()


def ingest_argv(work: Path, *extra: str) -> list[str]:
    catalog = work / "items.csv"
    if not catalog.exists():
        rows = [f"{i},item number {i}" for i in range(ROWS)]
        catalog.write_text("item_id,title\n" + "\n".join(rows) + "\n")
    store = f"faiss:{work / 'store'}"
    flags = ["--id-col", "item_id", "--text", "{title}", "--embedder", "hash", *extra]
    return ["ingest", "--source", str(catalog), "--store", store, *flags]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedrec.embedders, "get_embedder", hash_embedder)
    return tmp_path


# a child process: `embedrec ingest` with the hash embedder, its output wherever the test says
CHILD = """
import sys
import termios
import tomllib
import embedrec.embedders
from tests.test_output import hash_embedder
embedrec.embedders.get_embedder = hash_embedder
from embedrec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def child(work: Path, **streams: Any) -> subprocess.Popen:
    env = {**os.environ, "EMBEDREC_CACHE": str(work / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)
    argv = [sys.executable, "-c", CHILD, *ingest_argv(work)]
    return subprocess.Popen(argv, cwd=REPO, env=env, **streams)


def test_rates_and_durations_read_well() -> None:
    assert format_rate(5 / 0.4) == "12.5"  # a 5-row ingest is not "0 rows/s"
    assert format_rate(5 / 24) == "0.208"
    assert format_rate(0) == "0"
    assert format_rate(999.96) == "1,000"
    assert format_rate(123456.7) == "123,457"
    assert [format_duration(s) for s in (0.42, 12.4, 185, 7620)] == [
        "0.4s",
        "12s",
        "3m05s",
        "2h07m",
    ]


def test_a_log_gets_the_header_first_and_no_carriage_returns(work: Path) -> None:
    log = work / "log.txt"
    with log.open("w") as fh:
        assert child(work, stdout=fh, stderr=subprocess.STDOUT).wait(timeout=300) == 0
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("ingest ") and "-> faiss:" in lines[0]
    record = next(line for line in lines if line.startswith("ingest: "))
    assert record.startswith(f"ingest: {ROWS}/{ROWS} rows, ") and " rows/s, " in record
    assert lines.index(record) < next(i for i, ln in enumerate(lines) if "rows read" in ln)
    assert f"upserted  {ROWS}" in text


def test_a_terminal_gets_a_bar(work: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = child(work, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    shown = b"".join(chunks).decode()
    frames = shown.replace("\r\n", "\n").split("\r")  # the terminal turns \n into \r\n
    assert len(frames) > 1 and "ingest: 100%" in shown and f"{ROWS}/{ROWS}" in frames[-1]


def test_json_is_the_only_thing_on_stdout(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(ingest_argv(work, "--json")) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["command"] == "ingest" and summary["embedder"] == "test-hash"
    assert summary["rows_read"] == summary["upserted"] == ROWS
    assert summary["rows_per_s"] > 0 and summary["store"].startswith("faiss:")
    assert err.splitlines()[0].startswith("ingest ") and "rows read" in err
    assert main(ingest_argv(work, "--json")) == 0  # a rerun: unchanged rows, still figures
    assert json.loads(capsys.readouterr().out)["unchanged"] == ROWS


def test_quiet_prints_nothing_but_errors(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(ingest_argv(work, "--quiet")) == 0
    assert capsys.readouterr() == ("", "")
    argv = ingest_argv(work, "--quiet")
    argv[argv.index("--source") + 1] = str(work / "missing.csv")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("embedrec ingest: error: ") and "missing.csv" in err
    argv[argv.index("--quiet")] = "--json"  # a failed run prints no summary to parse
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1].startswith("embedrec ingest: error: ")


BENCH = """
[run]
k = 5
clients = [2]
warmup = 2
threads = 1

[[datasets]]
name = "tiny"
kind = "synthetic"
n = 200
queries = 8
dim = 8
clusters = 4

[[stores]]
name = "flat"
uri = "faiss:?index=Flat"
"""


def test_bench_json_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bench.toml"
    config.write_text(BENCH)
    out_dir = tmp_path / "out"
    argv = ["bench", str(config), "--out", str(out_dir)]
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["measurements"] == 1 and summary["skipped"] == []
    (point,) = summary["operating_points"]
    assert point["store"] == "flat" and point["recall"] == pytest.approx(1.0)
    assert Path(summary["files"]["report.md"]).exists()
    assert err.startswith(f"bench {config} -> {out_dir}") and "\r" not in err
    assert "bench tiny / flat: 1/1 measurements, " in err  # the line a log gets in place of a bar
    assert main([*argv, "--quiet"]) == 0  # resumed from results.jsonl
    assert capsys.readouterr() == ("", "")


def small_experiment(tmp_path: Path) -> Path:
    """configs/two_tower.toml cut down: no text model, one epoch, one split, one baseline."""
    data = tomllib.loads((REPO / "configs" / "two_tower.toml").read_text())
    items = data["data"]["items"]
    items["features"] = [f for f in items["features"] if f["kind"] != "text"]
    data["two_tower"] |= {"text": False, "epochs": 1, "val_fraction": 0.0, "refit": False}
    data["eval"] |= {"splits": ["leave-last-out"], "cold_fraction": 0.0, "models": ["most-popular"]}
    data["model_path"] = str(tmp_path / "model.pt")
    path = tmp_path / "experiment.toml"
    path.write_text(dumps(data))
    return path


@pytest.mark.slow  # one epoch of the two-tower on MovieLens-100k and a leaderboard: ~30-90 s
def test_train_and_evaluate_json_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = small_experiment(tmp_path)
    assert main(["train", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    trained = json.loads(out)
    assert trained["command"] == "train" and Path(trained["model"]).exists()
    assert trained["epoch"] == 1 and trained["loss"] > 0 and len(trained["history"]) == 1
    assert err.startswith(f"train {config}") and "\r" not in err
    assert main(["evaluate", str(config), "--out", str(tmp_path / "board"), "--json"]) == 0
    out, err = capsys.readouterr()
    board = json.loads(out)
    assert Path(board["files"]["leaderboard.json"]).exists()
    (row,) = board["leaderboard"]["rows"]
    assert row["model"] == "most popular" and row["ndcg@10"] > 0
    assert err.startswith(f"evaluate {config}") and "| most popular |" in err
    assert main(["train", str(config), "--quiet"]) == 0
    assert main(["evaluate", str(config), "--out", str(tmp_path / "board"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
