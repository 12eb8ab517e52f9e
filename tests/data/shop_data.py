"""A second dataset for the tests: MovieLens-100k reshaped into an e-commerce order log.

Nothing in embedrec knows it: other column names, Parquet orders with ISO 8601 timestamps
and a quantity weight and no rating (implicit feedback: only ratings of 4 and 5 become
orders), a CSV product catalog with a ';'-separated category string and a price, and a TSV
customer table with a birth year and a segment. configs/shop.toml describes it.

    python tests/data/shop_data.py [FOLDER] [--users N]   # default FOLDER: data/shop
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from embedrec.data.movielens import load_movielens

SEGMENTS = {"F": "consumer", "M": "business"}


def build_shop(folder: str | Path = "data/shop", users: int | None = None) -> Path:
    """Write orders.parquet, products.csv and customers.tsv into `folder`."""
    ml = load_movielens()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    people = ml.users.head(users) if users else ml.users
    rated = ml.ratings[ml.ratings["user_id"].isin(set(people["user_id"]))]
    bought = rated[rated["rating"] >= 4]
    stamps = pd.to_datetime(bought["timestamp"], unit="s", utc=True)
    pd.DataFrame(
        {
            "customer": "C" + bought["user_id"].str.zfill(4),
            "sku": "SKU-" + bought["item_id"].str.zfill(5),
            "ordered_at": stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quantity": (bought["rating"] - 3).astype(int),
        }
    ).to_parquet(folder / "orders.parquet", index=False)
    items = ml.items
    price = (items["item_id"].astype(int) * 37 % 90 + 9.99).round(2)
    pd.DataFrame(
        {
            "sku": "SKU-" + items["item_id"].str.zfill(5),
            "name": items["title"],
            "categories": [";".join(g) for g in items["genres"]],
            "price": price,
        }
    ).to_csv(folder / "products.csv", index=False)
    pd.DataFrame(
        {
            "customer": "C" + people["user_id"].str.zfill(4),
            "birth_year": 1998 - people["age"].astype(int),
            "segment": people["gender"].map(SEGMENTS),
        }
    ).to_csv(folder / "customers.tsv", sep="\t", index=False)
    return folder


def shop_beside_config(
    root: Path, config: Path, *, users: int, quick: dict[str, str], name: str
) -> Path:
    """`root` holding data/shop/ (`users` customers) and `config` copied beside it as `name`,
    each `quick` replacement made: its `[data]` paths, which lead from configs/ to
    ../data/shop/, then lead to root/data/shop/. Returns `root`."""
    build_shop(root / "data" / "shop", users=users)
    text = config.read_text().replace('"../data/shop/', '"data/shop/')
    for old, new in quick.items():
        text = text.replace(old, new)
    (root / name).write_text(text)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="data/shop", type=Path)
    parser.add_argument("--users", type=int, help="only the first N customers")
    args = parser.parse_args()
    print(f"wrote {build_shop(args.folder, args.users)}")


if __name__ == "__main__":
    main()
