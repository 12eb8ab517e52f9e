"""Errors in the user's terms (issue 28): each names the flag or config key to set and the
file it is about, in one line with exit code 2; `embedrec query` checks a filter's fields
before loading its model and prints its hits as JSON with --json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedrec import open_store
from embedrec.cli import main as cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_without_an_id_column_names_the_flag(tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "items.csv"
    catalog.write_text("sku,name\nA1,Trail runner\n")
    argv = [
        "ingest",
        "--source",
        str(catalog),
        "--store",
        f"faiss:{tmp_path}/s",
        "--text",
        "{name}",
    ]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.strip() == (
        "embedrec ingest: error: command line: [source] id: Field required (give --id-col COLUMN)"
    )


def test_a_time_split_without_a_timestamp_names_the_file_and_the_key(tmp_path, capsys) -> None:
    config = tmp_path / "shop.toml"
    config.write_text(
        '[data.interactions]\npath = "orders.csv"\nuser = "customer"\nitem = "sku"\n'
        '[data.items]\npath = "products.csv"\nid = "sku"\n'
        '[eval]\nsplits = ["stratified", "temporal"]\n'
    )
    code, _, err = run(["evaluate", str(config), "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err
    assert str(config) in err and "['temporal']" in err
    assert '`timestamp = "COLUMN"` under [data.interactions]' in err and "orders.csv" in err


def test_query_names_a_misspelt_filter_field_before_loading_a_model(tmp_path, capsys) -> None:
    store = open_store(f"faiss:{tmp_path}/movies", dim=4)
    store.upsert(["1", "2"], np.eye(4)[:2], [{"title": "Heat", "year": 1995}, {"title": "Up"}])
    store.close()
    flt = json.dumps({"yeer": {"$gte": 1990}})
    code, out, err = run(
        ["query", "--store", f"faiss:{tmp_path}/movies", "--text", "x", "--filter", flt], capsys
    )
    assert code == 2 and not out
    assert "filter field 'yeer' is not a field of" in err and "its fields: title, year" in err


@pytest.mark.slow  # loads the text model twice (ingest, query)
def test_query_prints_its_hits_as_json(tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "items.csv"
    catalog.write_text("sku,name\nA1,Waterproof rain jacket\nA2,Wool hat\n")
    uri = f"faiss:{tmp_path}/s"
    ingest = ["ingest", "--source", str(catalog), "--store", uri, "--id-col", "sku"]
    assert cli([*ingest, "--text", "{name}", "--metadata", "name", "--quiet"]) == 0
    capsys.readouterr()
    code, out, err = run(["query", "--store", uri, "--text", "rain", "--k", "1", "--json"], capsys)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["command"] == "query" and answer["hits"][0]["id"] == "A1"
    assert answer["hits"][0]["metadata"] == {"name": "Waterproof rain jacket"}
    assert "about 7 s" in err and "top 1" in err  # the note and the table, for people
    code, out, err = run(["query", "--store", uri, "--text", "rain", "--quiet"], capsys)
    assert code == 0 and not out and not err
