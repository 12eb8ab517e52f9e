"""The one table reader: the format from the name (a .tsv is TSV), text cells, one NA rule,
and every failure a CatalogError naming the file."""

import gzip
from pathlib import Path

import pandas as pd
import pytest

from embedrec.data.config import load_data_section
from embedrec.data.dataset import load_dataset
from embedrec.data.tables import CatalogError, detect_format, read_table
from embedrec.retrieval.config import UsersConfig
from embedrec.retrieval.users import read_users


def test_the_format_comes_from_the_name(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "a.TSV") == "tsv"
    assert detect_format(tmp_path / "a.csv.gz") == "csv"
    assert detect_format(tmp_path / "a.ndjson") == "jsonl"
    with pytest.raises(CatalogError, match=r"a\.txt: cannot tell the format"):
        detect_format(tmp_path / "a.txt")


def test_tsv_is_read_as_tsv_and_cells_as_text(tmp_path: Path) -> None:
    path = tmp_path / "users.tsv"
    path.write_text("user_id\tage\tnote\n007\t31\tNA\n8\t\tx, y\n")
    frame = read_table(path)
    assert list(frame.columns) == ["user_id", "age", "note"]
    assert frame["user_id"].tolist() == ["007", "8"]  # ids keep their leading zeros
    assert frame["note"].tolist() == ["NA", "x, y"]  # only an empty cell is missing
    assert pd.isna(frame["age"][1])


def test_gzip_jsonl_parquet_and_errors(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "r.csv.gz", "wt") as f:
        f.write("a,b\n1,2\n")
    assert read_table(tmp_path / "r.csv.gz").to_dict("records") == [{"a": "1", "b": "2"}]
    (tmp_path / "r.jsonl").write_text('{"a": 1}\n{"a": 2, "b": "x"}\n')
    assert read_table(tmp_path / "r.jsonl")["a"].tolist() == [1, 2]
    pd.DataFrame({"a": [1.5]}).to_parquet(tmp_path / "r.parquet")
    assert read_table(tmp_path / "r.parquet")["a"].tolist() == [1.5]
    with pytest.raises(CatalogError, match=r"missing\.csv: no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CatalogError, match=r"bad\.parquet: cannot read it as parquet"):
        read_table(tmp_path / "bad.parquet")


def test_the_service_reads_a_tsv_user_table_as_tsv(tmp_path: Path) -> None:
    (tmp_path / "users.tsv").write_text("user_id\tage\n1\t30\n2\t40\n")
    (tmp_path / "ratings.tsv").write_text("user_id\titem_id\n1\t10\n2\t10\n")
    users, ratings = read_users(
        UsersConfig(users=tmp_path / "users.tsv", ratings=tmp_path / "ratings.tsv")
    )
    assert list(users.columns) == ["user_id", "age"]
    assert users["age"].tolist() == [30, 40]  # features keep their inferred types
    assert ratings[["user_id", "item_id"]].values.tolist() == [["1", "10"], ["2", "10"]]


def test_data_paths_are_taken_from_the_config_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "configs"
    (folder / "t").mkdir(parents=True)
    (folder / "t" / "orders.csv").write_text("user_id,item_id\nu1,i1\nu2,i1\n")
    config = folder / "exp.toml"
    config.write_text(
        '[data.interactions]\npath = "t/orders.csv"\n'
        '[data.items]\npath = "t/items.csv"\nid = "item_id"\n'
    )
    monkeypatch.chdir(tmp_path)  # the working directory is not the config's folder
    section = load_data_section("configs/exp.toml")
    assert section.interactions.path == folder.resolve() / "t" / "orders.csv"
    with pytest.raises(
        CatalogError, match=r"items\.csv: no such file \(from \[data\.items\] path in configs/exp"
    ):
        load_dataset(section)
