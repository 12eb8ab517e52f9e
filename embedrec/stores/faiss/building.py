"""Building an index from vectors already stored: training a trainable kind once there is
data enough, and rebuilding after a compaction."""

from __future__ import annotations

import faiss
import numpy as np

from embedrec.stores.faiss.kinds import IndexSpec, new_index

TRAIN_SAMPLE = 100_000
"""Vectors a trainable kind trains on at most (a seeded sample of the data)."""


def _training_sample(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) <= TRAIN_SAMPLE:
        return vectors
    pick = np.random.default_rng(0).choice(len(vectors), TRAIN_SAMPLE, replace=False)
    return vectors[np.sort(pick)]


def build_index(
    index: faiss.Index,
    spec: IndexSpec,
    live: np.ndarray,
    *,
    train: bool,
    built: bool,
    ef_construction: int,
) -> faiss.Index:
    """A new index holding `index`'s vectors at the slots `live`, in that order: trained
    first when `train`, else of the same kind and state (staging flat, trained, plain)."""
    dim = index.d
    metric = "l2" if index.metric_type == faiss.METRIC_L2 else "dot"  # same FAISS metric
    vectors = index.reconstruct_batch(live) if live.size else np.empty((0, dim), "f4")
    if train:
        fresh = new_index(
            spec, dim, metric, ef_construction=ef_construction, nlist=spec.nlist_for(len(live))
        )
        fresh.train(_training_sample(vectors))
        built = True
    elif built and spec.trainable:
        fresh = faiss.clone_index(index)
        fresh.reset()
    else:
        fresh = new_index(spec, dim, metric, ef_construction=ef_construction)
    if built and spec.family == "ivf":
        faiss.extract_index_ivf(fresh).make_direct_map(True)
    fresh.add(vectors)
    return fresh
