"""`embedrec ingest --rebuild` behind an alias, end to end on the command line: adoption of a
plain store, validation, the swap, `generations`, `rollback`, `drop`; a failed validation
that swaps nothing; and a rebuild killed (SIGKILL, in a child process) at named points, after
which the previous generation still answers the same searches and a rerun completes.

The embedders here hash their text (no model to load); a second "model" seeds differently,
so a rebuild with it visibly changes what the alias answers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedrec.embedders
from embedrec.cli import main
from embedrec.stores import open_existing, open_store
from embedrec.stores.lifecycle.aliases import alias_book
from embedrec.testing.pinecone_loopback import LoopbackPinecone

REPO = Path(__file__).resolve().parents[2]
ROWS = 300
QUERIES = np.random.default_rng(7).standard_normal((5, 8))


class HashEmbedder:
    """Text -> a unit vector seeded by the model's name and the text's hash."""

    dim = 8
    modality = "text"

    def __init__(self, spec: str) -> None:
        self.name = f"test-{spec}"

    def prepare(self, row: Any) -> str:
        return row.payload

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        digests = [hashlib.sha256(f"{self.name}\0{t}".encode()).hexdigest() for t in batch]
        rngs = [np.random.default_rng(int(d[:8], 16)) for d in digests]
        vectors = np.stack([rng.standard_normal(self.dim) for rng in rngs])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def hash_embedder(spec: str, **kw: Any) -> HashEmbedder:
    return HashEmbedder(spec)


# a child process: the command line with the hash embedders, killed at $KILL_AT (its Nth time)
CHILD = """
import os, signal, sys
import embedrec.embedders
import embedrec.stores.lifecycle.generations as points
from tests.ingestion.test_rebuild import hash_embedder
embedrec.embedders.get_embedder = hash_embedder
target, times, seen = os.environ["KILL_AT"], int(os.environ["KILL_AFTER"]), []
def reached(point):
    if point == target:
        seen.append(point)
        if len(seen) >= times:
            os.kill(os.getpid(), signal.SIGKILL)
points.reached = reached
from embedrec.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedrec.embedders, "get_embedder", hash_embedder)
    rows = [f"{i},item number {i},{i % 7}" for i in range(ROWS)]
    (tmp_path / "items.csv").write_text("item_id,title,shelf\n" + "\n".join(rows) + "\n")
    return tmp_path


def ingest_argv(work: Path, store: str, embedder: str, *extra: str) -> list[str]:
    flags = ["--id-col", "item_id", "--text", "{title}", "--metadata", "shelf:int"]
    flags += ["--embedder", embedder, "--no-progress", *extra]
    return ["ingest", "--source", str(work / "items.csv"), "--store", store, *flags]


def answers(uri: str) -> list[list[str]]:
    with open_existing(uri) as store:
        return [hits.ids for hits in store.search(QUERIES, 10)]


def listing(uri: str, capsys: pytest.CaptureFixture) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["generations", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["generations"]
    return {row["generation"]: row for row in rows}


def test_rebuild_adopts_validates_swaps_and_rolls_back(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"faiss:{work / 'store'}?index=HNSW32"
    assert main(ingest_argv(work, uri, "old")) == 0
    before = answers(uri)
    capsys.readouterr()
    assert main(ingest_argv(work, uri, "new", "--rebuild", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adopted"] == "g0000" and report["live"] == "g0001"
    assert report["previous"] == ["g0000"] and report["swapped"] is True
    assert report["count"] == report["expected"] == ROWS and report["fetch_mismatches"] == 0
    assert report["recall"] >= 0.9 and report["recall_queries"] == 100
    after = answers(uri)
    assert after != before
    rows = listing(uri, capsys)
    assert rows["g0001"]["role"] == "live" and rows["g0001"]["embedder_name"] == "test-new"
    assert rows["g0000"]["role"] == "previous" and rows["g0000"]["embedder_name"] == "test-old"
    assert rows["g0000"]["count"] == rows["g0001"]["count"] == ROWS

    # a plain ingest into the alias writes its live generation (the new model's)
    assert main(ingest_argv(work, uri, "new")) == 0
    assert "writing its live generation" in capsys.readouterr().err
    assert main(ingest_argv(work, uri, "old")) == 2  # the live generation is the new model's
    assert "test-new" in capsys.readouterr().err

    assert main(["rollback", uri]) == 0
    assert answers(uri) == before
    assert main(["drop", uri, "g0000"]) == 2  # live again
    assert "is live" in capsys.readouterr().err
    assert main(["drop", uri, "g0001"]) == 0
    assert set(listing(uri, capsys)) == {"g0000"}


def test_a_failed_validation_swaps_nothing(work: Path, capsys: pytest.CaptureFixture) -> None:
    """IVF with 8 lists probed one at a time cannot find 90% of the exact top-10."""
    uri = f"faiss:{work / 'store'}"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    before = answers(uri)
    weak = f"{uri}?index=IVF8,Flat&nprobe=1"
    capsys.readouterr()
    assert main(ingest_argv(work, weak, "new", "--rebuild", "--batch-size", "512")) == 1
    err = capsys.readouterr().err
    assert (
        "generation g0002 of" in err and "failed validation, not swapped (g0001 stays live)" in err
    )
    assert "recall: recall@10 against exact search is" in err and "below 0.9" in err
    assert answers(uri) == before
    book = alias_book(uri)
    assert book.live_token() == "g0001"
    assert [g.name for g in book.state().unlisted] == ["g0002"]  # left for inspection

    # a lower bar passes; the failed generation is removed first, its name not reused
    assert main(ingest_argv(work, weak, "new", "--rebuild", "--min-recall", "0.05")) == 0
    assert "removing generation g0002" in capsys.readouterr().err
    state = book.state()
    assert state.live is not None and state.live.name == "g0003" and state.unlisted == ()


def test_a_failed_first_rebuild_leaves_the_path_usable(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    """A brand-new path whose first rebuild failed holds the alias's lease, counter and the
    failed generation, nothing live: a plain ingest still makes a store there, and the next
    rebuild adopts it and removes the failed generation."""
    uri = f"faiss:{work / 'store'}"
    weak = f"{uri}?index=IVF8,Flat&nprobe=1"
    assert main(ingest_argv(work, weak, "new", "--rebuild", "--batch-size", "512")) == 1
    assert {"rebuild.lock", "generations.json", "g0001"} <= {
        p.name for p in (work / "store").iterdir()
    }
    capsys.readouterr()
    assert main(ingest_argv(work, uri, "new")) == 0, capsys.readouterr().err
    assert [len(ids) for ids in answers(uri)] == [10] * len(QUERIES)
    assert main(ingest_argv(work, uri, "new", "--rebuild")) == 0
    err = capsys.readouterr().err
    assert "adopted the store" in err and "removing generation g0001" in err
    state = alias_book(uri).state()
    assert state.live is not None and state.live.name == "g0002" and state.unlisted == ()


def calibrate_config(work: Path, nprobe: list[int], max_effort: int = 16_384) -> str:
    path = work / "calibrate.toml"
    path.write_text(f"[calibrate]\ntarget_recall = 0.95\nqueries = 100\nmax_effort = {max_effort}\n"
                    f"\n[calibrate.grids]\nnprobe = {nprobe}\n")  # fmt: skip
    return str(path)


def test_a_rebuild_calibrates_its_generation_before_validating_it(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    """nprobe=1 fails validation (above); calibrated, the same index passes and keeps the
    setting it chose as the generation's own search default. A grid that cannot reach the
    target swaps nothing."""
    uri = f"faiss:{work / 'store'}?index=IVF8,Flat&nprobe=1"
    argv = ingest_argv(work, uri, "new", "--rebuild", "--batch-size", "512", "--json")
    # max_effort=1: the grid stops at nprobe=1 instead of running on to nlist
    assert main([*argv, "--calibrate", calibrate_config(work, [1], max_effort=1)]) == 1
    err = capsys.readouterr().err
    assert "calibration: no values of nprobe in the grid reach recall@10 0.95" in err
    assert alias_book(uri).live_token() is None

    assert main([*argv, "--calibrate", calibrate_config(work, [1, 2, 4, 8])]) == 0
    report = json.loads(capsys.readouterr().out)
    chosen = report["calibration"]["chosen"]
    assert report["swapped"] and chosen["nprobe"] > 1 and report["recall"] >= 0.9
    with open_existing(uri) as store:
        assert store.info is not None and dict(store.info.search_defaults) == chosen

    assert main(ingest_argv(work, uri, "new", "--calibrate", "x.toml")) == 2
    assert "apply only with --rebuild" in capsys.readouterr().err


def run_killed(work: Path, argv: list[str], point: str, after: int = 1) -> None:
    env = os.environ | {"KILL_AT": point, "KILL_AFTER": str(after), "PYTHONPATH": str(REPO)}
    env["EMBEDREC_CACHE"] = str(work / "cache")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], cwd=REPO, env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


@pytest.mark.parametrize(
    ("point", "after"),
    [
        ("adopt:copied", 1),  # the first rebuild of a plain store, before its pointer
        ("adopt:after-replace", 1),  # its pointer written, the plain files not yet removed
        ("rebuild:ingesting", 4),  # some batches checkpointed into the new generation
        ("rebuild:validating", 1),
        ("swap:before-replace", 1),
    ],
)
def test_a_killed_rebuild_leaves_the_old_generation_serving_and_a_rerun_completes(
    work: Path, capsys: pytest.CaptureFixture, point: str, after: int
) -> None:
    uri = f"faiss:{work / 'store'}?index=HNSW32"
    assert main(ingest_argv(work, uri, "old")) == 0
    before = answers(uri)
    rebuild = ingest_argv(work, uri, "new", "--rebuild", "--batch-size", "32")
    rebuild += ["--checkpoint-seconds", "0"]
    run_killed(work, rebuild, point, after)

    assert answers(uri) == before  # the old store, plain or adopted, serves as before
    assert alias_book(uri).live_token() in (None, "g0000")
    capsys.readouterr()
    assert main([*rebuild, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["swapped"] and report["count"] == ROWS and report["recall"] >= 0.9
    assert report["adopted"] == ("g0000" if point == "adopt:copied" else None)
    building = not point.startswith("adopt:")
    assert report["removed"] == (["g0001"] if building else [])  # the half-built one
    assert not (work / "store" / "manifest.json").exists()  # the adoption finished
    assert report["live"] == ("g0002" if building else "g0001")  # names are never reused
    assert report["previous"] == ["g0000"]
    assert answers(uri) != before
    assert main(["rollback", uri]) == 0 and answers(uri) == before


def test_a_rebuild_killed_just_after_the_swap_is_swapped_whole(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"faiss:{work / 'store'}"
    assert main(ingest_argv(work, uri, "old", "--rebuild")) == 0
    before = answers(uri)
    rebuild = ingest_argv(work, uri, "new", "--rebuild")
    run_killed(work, rebuild, "swap:after-replace")
    state = alias_book(uri).state()
    assert state.live is not None and state.live.name == "g0002"
    assert [g.name for g in state.previous] == ["g0001"]
    new = answers(uri)
    assert new != before
    assert main(rebuild) == 0  # a rerun builds and swaps in another, equal generation
    assert answers(uri) == new and alias_book(uri).live_token() == "g0003"


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> Any:
    server = LoopbackPinecone()
    monkeypatch.setenv("PINECONE_API_KEY", "loopback-key")
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
    monkeypatch.setenv("PINECONE_HOST", "")
    yield server
    server.close()
    assert server.violations == []


@pytest.mark.parametrize("scheme", ["qdrant+edge", "qdrant+local", "pinecone"])
def test_a_rebuild_on_other_backends(
    work: Path, capsys: pytest.CaptureFixture, loopback: Any, scheme: str
) -> None:
    uri = {
        "qdrant+edge": f"qdrant+edge:{work / 'edge'}",
        "qdrant+local": f"qdrant+local:{work / 'qdrant'}/items",
        "pinecone": "pinecone://items?namespace=prod",
    }[scheme]
    if scheme == "pinecone":
        open_store("pinecone://items?create=1", dim=HashEmbedder.dim).close()
    rows = [f"{i},item number {i},{i % 7}" for i in range(80)]  # local mode writes slowly
    (work / "items.csv").write_text("item_id,title,shelf\n" + "\n".join(rows) + "\n")
    assert main(ingest_argv(work, uri, "old")) == 0
    before = answers(uri)
    capsys.readouterr()
    assert main(ingest_argv(work, uri, "new", "--rebuild", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["adopted"], report["live"], report["previous"]) == ("g0000", "g0001", ["g0000"])
    assert report["count"] == 80 and report["fetch_mismatches"] == 0
    assert report["recall"] >= 0.9
    assert answers(uri) != before
    assert main(["rollback", uri]) == 0 and answers(uri) == before
