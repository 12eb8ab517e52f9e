"""What `embedrec drift` compares, turned into arrays: two saved two-tower models scored on a
dataset's users and items, or two item stores read by id and searched for neighbours."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.common.progress import Progress
from embedrec.data.config import load_data_section
from embedrec.data.dataset import load_dataset
from embedrec.embedders.two_tower import TwoTowerModel, default_text_fn
from embedrec.eval.drift.config import DriftSection
from embedrec.eval.drift.gauges import (
    BATCH,
    Neighbours,
    Recommendations,
    Vectors,
    jaccard,
    neighbours_both,
    recommend_both,
    sample_indices,
)
from embedrec.stores import REGISTRY, VectorStore, open_store


def is_store(arg: str) -> bool:
    """A store URI starts with a known scheme (`faiss:`, `qdrant+edge:`, ...); anything else
    is a model file."""
    return ":" in arg and arg.split(":", 1)[0] in REGISTRY


def compare(
    old: str, new: str, cfg: DriftSection, ids: Path | None, progress: bool
) -> tuple[Recommendations | None, Neighbours, int]:
    """(recommendation lists or None for stores, neighbour sets and norms, catalog size)."""
    if is_store(old):
        return (None, *compare_stores(old, new, cfg, _store_ids(ids, cfg), progress))
    return compare_models(Path(old), Path(new), cfg, progress)


def _dataset(cfg: DriftSection):
    if cfg.data is None:
        raise ValueError(
            "drift needs the users and items the models score: give --data CONFIG (the "
            "`embedrec train` config) or `data` in the [drift] section"
        )
    return load_dataset(load_data_section(cfg.data))


def _seen(interactions: pd.DataFrame, user_ids: Sequence[str], items: pd.Series):
    """Per sampled user, the catalog positions of the items they interacted with."""
    position = pd.Series(np.arange(len(items)), index=items.astype(str).to_numpy())
    known = interactions[interactions["item_id"].astype(str).isin(position.index)]
    grouped = known.groupby(known["user_id"].astype(str))["item_id"]
    by_user = {u: position[g.astype(str).to_numpy()].to_numpy() for u, g in grouped}
    empty = np.empty(0, dtype=np.int64)
    return [by_user.get(str(u), empty) for u in user_ids]


def compare_models(
    old: Path, new: Path, cfg: DriftSection, progress: bool
) -> tuple[Recommendations, Neighbours, int]:
    """Both models' vectors for a seeded sample of the dataset's users and for every catalog
    item; lists over the whole catalog, neighbours of a seeded sample of items."""
    data = _dataset(cfg)
    text = functools.cache(default_text_fn)  # loaded once, and only for text features
    users = data.users.iloc[sample_indices(len(data.users), cfg.users, cfg.seed)]
    vectors = []
    for path in (old, new):
        model = TwoTowerModel.load(path, text_fn=lambda texts: text()(texts))
        vectors.append(Vectors(model.user_vectors(users), model.item_vectors(data.items)))
    seen = _seen(data.interactions, users["user_id"].tolist(), data.items["item_id"])
    rec = recommend_both(vectors[0], vectors[1], seen, cfg.k, progress)
    sample = sample_indices(len(data.items), cfg.items, cfg.seed)
    nn = neighbours_both(vectors[0].items, vectors[1].items, sample, cfg.k, progress)
    return rec, nn, len(data.items)


def _store_ids(path: Path | None, cfg: DriftSection) -> list[str]:
    if path is not None:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return _dataset(cfg).items["item_id"].astype(str).tolist()


def read_store(
    store: VectorStore, ids: list[str], k: int, bar: Progress
) -> tuple[np.ndarray, list]:
    """The stored vectors of `ids` and each one's k nearest other ids in the same store."""
    vectors, hits = [], []
    for start in range(0, len(ids), BATCH):
        part = ids[start : start + BATCH]
        found, batch = store.fetch_vectors(part)
        if len(found) != len(part):
            missing = sorted(set(part) - set(found))
            raise ValueError(
                f"{store.uri}: {len(missing)} sampled ids missing, e.g. {missing[0]!r}"
            )
        vectors.append(batch)
        hits += [list(h.ids) for h in store.search(batch, k, exclude=[{i} for i in part])]
        bar.update(len(part))
    return np.concatenate(vectors), hits


def compare_stores(
    old: str, new: str, cfg: DriftSection, ids: list[str], progress: bool
) -> tuple[Neighbours, int]:
    """Norms and nearest-neighbour sets of a seeded sample of `ids` in two stores, each
    neighbour list from the store's own search (its ANN index, as served)."""
    sample = [ids[i] for i in sample_indices(len(ids), cfg.items, cfg.seed)]
    if not sample:
        raise ValueError("no ids to sample: the id list is empty")
    read = []
    with Progress(2 * len(sample), "drift: stores", "items", enabled=progress) as bar:
        for uri in (old, new):
            with open_store(uri) as store:
                read.append((*read_store(store, sample, cfg.k, bar), store.count()))
    (old_vecs, old_hits, n_old), (new_vecs, new_hits, _) = read
    return store_neighbours((old_vecs, old_hits), (new_vecs, new_hits), cfg.k), n_old


def encode_ids(rows: list[list[str]], k: int, codes: dict[str, int]) -> np.ndarray:
    """Rows of ids as rows of k codes (-1 padding), numbering new ids into `codes`."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, : len(row)] = [codes.setdefault(i, len(codes)) for i in row]
    return out


def store_neighbours(
    old: tuple[np.ndarray, list], new: tuple[np.ndarray, list], k: int
) -> Neighbours:
    """Neighbour sets and norms from what `read_store` read of the same ids in two stores."""
    codes: dict[str, int] = {}
    a, b = encode_ids(old[1], k, codes), encode_ids(new[1], k, codes)
    return Neighbours(
        old=a,
        new=b,
        jaccard=jaccard(a, b),
        old_norms=np.linalg.norm(old[0], axis=1),
        new_norms=np.linalg.norm(new[0], axis=1),
    )
