"""The packaged datasets, by name: the one list that `embedrec datasets`, `embedrec ingest
--dataset`, `[source] dataset` and `[data] dataset` all read. Each loader is named by string
and imported on first use, so reading the list (for `--help`) loads no data library."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Packaged:
    description: str
    loader: str
    """"module:function" taking the cache root (None: $EMBEDREC_CACHE)."""


DATASETS: dict[str, Packaged] = {
    "movielens": Packaged(
        "MovieLens-100k: 1,682 movies (title, year, genres), 943 users, 100,000 ratings",
        "embedrec.data.movielens:load_movielens",
    ),
    "fashion-mnist": Packaged(
        "Fashion-MNIST: 70,000 28x28 grayscale product images in 10 categories "
        "(60,000 train, 10,000 test)",
        "embedrec.data.fashion_mnist:load_fashion_mnist",
    ),
}


def known_dataset(name: str) -> str:
    """`name` if it is a packaged dataset; else a ValueError listing them (for validators)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return name
