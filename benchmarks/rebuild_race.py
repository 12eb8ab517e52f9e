"""Two rebuilds of one FAISS alias at once, repeated (issue #23): how often a reader is served
a partial generation, and how often a rebuild reports success for a generation that did not
go live (or that holds another rebuild's data under its name).

    .venv/bin/python benchmarks/rebuild_race.py [--runs 20] [--rows 600] [--delay 5] \
        [--slow 0.4] [--tree .] [--interleavings validation,later,later-wait]

Each run copies a fresh alias (g0001 live, built from `--rows` hashed-text rows) and starts
two `embedrec ingest --rebuild` child processes of the tree `--tree` (this repository by
default; a `git archive` of an older commit, with this repository's tests/ copied in, runs
the old code), with the fault hooks of tests/ingestion/rebuild_child.py:

- `validation`: the first is paused between its validation and its swap; the second runs
  to its end; then the first is let go (the attack of #23);
- `later`: the first ingests slowly (`--slow` s a batch of 32 rows, as a real model would);
  the second starts `--delay` s after it (the "5 s later" case of #23);
- `later-wait`: the same, the second with `--wait` (new code only).

Meanwhile a reader in this process opens the alias every 20 ms and counts the records its
live generation serves. Per run: `partial` when the reader was ever served a count other
than `--rows` (or the alias failed to open); `false success` when a rebuild exited 0 saying
generation X went live but X is neither live nor previous afterwards, or holds another
model's vectors or not `--rows` records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from embedrec.stores import StoreError, open_existing
from embedrec.stores.lifecycle.aliases import alias_book

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--id-col", "item_id", "--text", "{title}", "--metadata", "shelf:int", "--no-progress"]


class Child:
    def __init__(self, tree: Path, work: Path, name: str, argv: list[str], **hooks: str) -> None:
        self.folder = work / name
        self.folder.mkdir()
        env = os.environ | {"PYTHONPATH": str(tree), "EMBEDREC_CACHE": str(work / "cache")}
        env |= {"PAUSE_DIR": str(self.folder), **hooks}
        with (self.folder / "out").open("w") as out, (self.folder / "err").open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.ingestion.rebuild_child", *argv],
                cwd=tree,
                env=env,
                stdout=out,
                stderr=err,
            )

    def wait_paused(self) -> None:
        while not (self.folder / "paused").exists():
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "err").read_text()[-2000:])
            time.sleep(0.02)

    def finish(self) -> int:
        return self.proc.wait(600)

    def report(self) -> dict | None:
        try:
            return json.loads((self.folder / "out").read_text())
        except ValueError:
            return None


class Reader(threading.Thread):
    """Opens the alias every 20 ms; `bad` counts the reads that did not serve `rows`."""

    def __init__(self, uri: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.uri, self.rows, self.bad, self.reads = uri, rows, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                with open_existing(self.uri) as store:
                    ok = store.count() == self.rows
            except StoreError:
                ok = False
            self.reads += 1
            self.bad += not ok


def argv(source: Path, uri: str, model: str, *extra: str) -> list[str]:
    base = ["ingest", "--source", str(source), "--store", uri, "--embedder", model, *FLAGS]
    return [*base, "--rebuild", "--json", "--batch-size", "32", "--checkpoint-seconds", "0", *extra]


def false_success(uri: str, child: Child, model: str, rows: int) -> bool:
    """Exit 0 and swapped, but its generation is not live or previous, or not its data."""
    report = child.report()
    if child.proc.returncode != 0 or not report or not report.get("swapped"):
        return False
    state = alias_book(uri).state()
    listed = [g for g in (state.live, *state.previous) if g is not None]
    mine = [g for g in listed if g.name == report["generation"]]
    if not mine:
        return True
    try:
        with open_existing(mine[0].uri) as store:
            info = store.info
            return store.count() != rows or info is None or info.embedder_name != f"test-{model}"
    except StoreError:
        return True


def one_run(args: argparse.Namespace, template: Path, interleaving: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="race-") as tmp:
        work = Path(tmp)
        shutil.copytree(template, work, dirs_exist_ok=True)
        uri = f"faiss:{work / 'store'}?index=HNSW32"
        source = work / "items.csv"
        reader = Reader(uri, args.rows)
        reader.start()
        if interleaving == "validation":
            first = Child(args.tree, work, "first", argv(source, uri, "one"),
                          PAUSE_AT="rebuild:validated", PAUSE_AFTER="1")  # fmt: skip
            first.wait_paused()
            second = Child(args.tree, work, "second", argv(source, uri, "two"))
            second.finish()
            (first.folder / "go").touch()
        else:
            first = Child(args.tree, work, "first", argv(source, uri, "one"), SLOW_S=str(args.slow))
            time.sleep(args.delay)
            extra = ["--wait"] if interleaving == "later-wait" else []
            second = Child(args.tree, work, "second", argv(source, uri, "two", *extra))
        codes = first.finish(), second.finish()
        time.sleep(0.1)
        reader.stop.set()
        reader.join()
        false = [false_success(uri, c, m, args.rows) for c, m in ((first, "one"), (second, "two"))]
        return {
            "partial": int(reader.bad > 0),
            "false_success": int(any(false)),
            "first_ok": int(codes[0] == 0),
            "second_ok": int(codes[1] == 0),
            "second_refused": int(codes[1] == 2),
            "reads": reader.reads,
        }


def template_alias(args: argparse.Namespace, folder: Path) -> None:
    """The alias every run starts from: g0001 live, built by the `base` model."""
    rows = [f"{i},item number {i},{i % 7}" for i in range(args.rows)]
    (folder / "items.csv").write_text("item_id,title,shelf\n" + "\n".join(rows) + "\n")
    uri = f"faiss:{folder / 'store'}?index=HNSW32"
    child = Child(args.tree, folder, "base", argv(folder / "items.csv", uri, "base"))
    if child.finish() != 0:
        raise RuntimeError((child.folder / "err").read_text()[-2000:])
    shutil.rmtree(child.folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--delay", type=float, default=5.0)
    parser.add_argument("--slow", type=float, default=0.4)
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--interleavings", default="validation,later,later-wait")
    args = parser.parse_args()
    args.tree = args.tree.resolve()
    with tempfile.TemporaryDirectory(prefix="race-template-") as tmp:
        template = Path(tmp)
        template_alias(args, template)
        print(f"tree {args.tree}, {args.runs} runs each, {args.rows} rows", flush=True)
        print(f"{'interleaving':<12} {'partial':>8} {'false ok':>8} {'1st ok':>7} "
              f"{'2nd ok':>7} {'2nd exit 2':>11} {'reads':>7}")  # fmt: skip
        for interleaving in args.interleavings.split(","):
            totals: dict[str, int] = {}
            for _ in range(args.runs):
                for key, value in one_run(args, template, interleaving).items():
                    totals[key] = totals.get(key, 0) + value
            print(f"{interleaving:<12} {totals['partial']:>8} {totals['false_success']:>8} "
                  f"{totals['first_ok']:>7} {totals['second_ok']:>7} "
                  f"{totals['second_refused']:>11} {totals['reads']:>7}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
