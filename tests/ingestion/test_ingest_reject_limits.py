"""`embedrec ingest` fails a run whose rows were all rejected, and one whose rejected share
passes `--max-rejects P%`: the summary still reported, what landed kept, a rerun resuming."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.cli import main
from embedrec.ingestion.summary import RejectLimit
from embedrec.stores import open_store
from tests.ingestion.test_ingest_cli import (  # noqa: F401 (fixtures)
    MOVIES,
    TEXT_FLAGS,
    cache_dir,
    real_cache,
    summary_of,
    write_catalog,
)

BAD = {f"b{i}": ("", "", "") for i in range(3)}  # empty text: rejected


def ingest(path: Path, store: str, *extra: str) -> int:
    return main(["ingest", "--source", str(path), "--store", store, *extra, *TEXT_FLAGS])


def test_a_run_that_rejected_every_row_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """It exited 0."""
    path = write_catalog(tmp_path / "items.csv", BAD)
    store = f"faiss:{tmp_path / 'store'}"
    assert ingest(path, store) == 1
    captured = capsys.readouterr()
    assert "every one of the 3 rows read was rejected" in captured.err
    assert summary_of(captured.out)["rejected"] == "3"
    write_catalog(path, MOVIES)  # fixed
    assert ingest(path, store) == 0


def test_max_rejects_as_a_share_fails_the_run_at_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_catalog(tmp_path / "items.csv", MOVIES | BAD)  # 3 of 11 rows: 27%
    store = f"faiss:{tmp_path / 'store'}"
    assert ingest(path, store, "--max-rejects", "20%", "--batch-size", "4") == 1
    captured = capsys.readouterr()
    assert "3 of 11 rows read were rejected (27.3%, limit 20%)" in captured.err
    assert summary_of(captured.out)["upserted"] == "8"  # the good rows landed, reported
    with open_store(store) as opened:
        assert opened.count() == 8
    assert ingest(path, store, "--max-rejects", "30%") == 0  # under it: a resumed run
    assert summary_of(capsys.readouterr().out)["unchanged"] == "8"
    assert ingest(path, store, "--max-rejects", "lots") == 2
    assert "max_rejects" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "limit"),
    [(0, RejectLimit(count=0)), ("12", RejectLimit(count=12)), ("2.5%", RejectLimit(percent=2.5))],
)
def test_reject_limits_parse(given: int | str, limit: RejectLimit) -> None:
    assert RejectLimit.parse(given) == limit
    assert RejectLimit(percent=10).passed_by(2, 10, done=True)
    assert not RejectLimit(percent=10).passed_by(2, 10, done=False)  # judged at the end
    assert RejectLimit(count=1).passed_by(2, 10, done=False)
    for bad in ("-1", "101%", "x%", True):
        with pytest.raises(ValueError, match="max rejects"):
            RejectLimit.parse(bad)
