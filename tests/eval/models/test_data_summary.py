"""`embedrec train` and `evaluate` say what the data holds before working on it (issue 28):
users, items, interactions, the items no one interacted with (named), test users per split;
printed, in the --json summary and written to the run folder. A serve config can leave those
items out of recommendations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedrec.cli import main as cli
from embedrec.retrieval.config import UsersConfig
from embedrec.retrieval.users import Interactions, items_without_interactions, read_users

USERS, ITEMS = 8, 10  # items i8 and i9 are in the catalog, in no interaction


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    rows = ["customer,sku,at"]
    for u in range(USERS):
        rows += [f"c{u},i{(u + j) % 8},{1000 * u + j}" for j in range(4)]
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    items = ["sku,kind"] + [f"i{i},{'ab'[i % 2]}" for i in range(ITEMS)]
    (tmp_path / "products.csv").write_text("\n".join(items) + "\n")
    config = tmp_path / "shop.toml"
    config.write_text(
        f'[data.interactions]\npath = "{tmp_path}/orders.csv"\nuser = "customer"\n'
        'item = "sku"\ntimestamp = "at"\n'
        f'[data.items]\npath = "{tmp_path}/products.csv"\nid = "sku"\n'
        'features = [{ kind = "categorical", column = "kind" }]\n'
        "[two_tower]\ndim = 8\nhidden = 16\nepochs = 1\nbatch_size = 16\ntext = false\n"
        "val_fraction = 0.0\n"
        '[eval]\nsplits = ["stratified", "temporal"]\nmodels = ["most-popular"]\n'
        "stores = []\ncold_fraction = 0\n"
    )
    return config


def check(summary: dict, where: Path) -> None:
    assert summary["users"] == USERS and summary["items"] == ITEMS
    assert summary["interactions"] == USERS * 4
    assert summary["items_without_interactions"] == ["i8", "i9"]
    assert set(summary["test_users"]) == {"stratified", "temporal"}
    assert all(isinstance(n, int) and n > 0 for n in summary["test_users"].values())
    assert json.loads((where / "data_summary.json").read_text()) == {
        k: v for k, v in summary.items() if k != "file"
    }


def test_train_and_evaluate_summarize_the_data(shop: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "run" / "model.pt"
    assert cli(["train", str(shop), "--out", str(model), "--json"]) == 0
    out, err = capsys.readouterr()
    check(json.loads(out)["data"], model.parent)
    assert f"{USERS} users, {ITEMS} items, {USERS * 4} interactions" in err
    assert "items with no interactions: 2 (i8, i9)" in err
    board = tmp_path / "board"
    assert cli(["evaluate", str(shop), "--out", str(board), "--workers", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    check(json.loads(out)["data"], board)
    assert "split temporal:" in err and "exclude_without_interactions" in err


def test_a_serve_config_can_leave_out_items_without_interactions(shop: Path) -> None:
    config = UsersConfig(data=shop, exclude_without_interactions=True)
    interactions = Interactions.from_frames(*read_users(config))
    assert items_without_interactions(config, interactions) == {"i8", "i9"}
    with pytest.raises(ValueError, match="exclude_without_interactions needs data"):
        UsersConfig(users=shop, ratings=shop, exclude_without_interactions=True)
