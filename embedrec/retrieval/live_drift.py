"""How far a space's live generation moved from the one it replaced, measured on the open
stores as they serve: the figures of `embedrec drift` (`embedrec.eval.drift.figures.figures`)
over a seeded sample, for the `embedrec_drift_*` gauges on /metrics.

The comparison runs in the service's own processes, beside the requests, so it is paced:
it works in steps of `STEP` users or items and sleeps `PACE` times as long as each step took,
so that it holds a core (and Python's interpreter lock, which the requests of the same
process need) for a few milliseconds at a time and at most 1/(1 + PACE) of the time.

Item ids come from the rated items (with user data) and from the new store's answers to
seeded random queries, kept where both generations hold them; users (two-tower, with user
data) are the known users, each under their own generation's model. Recommendation lists are
each store's own top-k search with the user's seen items left out, as `/recommend` answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedrec.common.progress import Progress
from embedrec.common.vectors import l2_normalize
from embedrec.eval.drift.figures import figures
from embedrec.eval.drift.gauges import (
    Recommendations,
    kendall_tau_b,
    overlap_at_k,
    sample_indices,
)
from embedrec.eval.drift.inputs import encode_ids, read_store, store_neighbours
from embedrec.retrieval.spaces import Space
from embedrec.retrieval.users import Interactions
from embedrec.stores import VectorStore

K = 10
SEED = 42
STEP = 16
"""Users or items compared per step."""
PACE = 4.0
"""Sleep after each step, as a multiple of what the step took."""
GAUGES = {
    "overlap_mean": "Mean overlap@k of the sampled users' recommendation lists.",
    "rank_correlation_mean": "Mean Kendall tau-b over the union of each user's two lists.",
    "coverage_old": "Share of the catalog recommended to the sampled users, previous.",
    "coverage_new": "Share of the catalog recommended to the sampled users, live.",
    "gini_old": "Gini of how often each item is recommended, previous generation.",
    "gini_new": "Gini of how often each item is recommended, live generation.",
    "neighbour_jaccard_mean": "Mean Jaccard@k of the sampled items' nearest-neighbour sets.",
    "norm_shift": "|mean live item-vector norm - mean previous| / mean previous, sampled items.",
    "sampled_users": "Users the comparison sampled.",
    "sampled_items": "Items the comparison sampled.",
}
"""The figures exported as gauges (`embedrec_drift_<name>`), with their help text; each
compares the live generation with the one it replaced (k = 10)."""


def compare_spaces(
    old: Space, new: Space, interactions: Interactions | None, sample: int
) -> dict[str, float]:
    """The `GAUGES` figures of `new` against `old`, over `sample` users and items."""
    pace = Pacer(PACE)
    ids = _sample_ids(old, new, interactions, sample, pace)
    if not ids:
        raise ValueError(f"no item ids that both {new.name} generations hold to compare")
    reads = [_read(s.failover.primary, ids, pace) for s in (old, new)]
    nn = store_neighbours(reads[0], reads[1], K)
    n_items = new.failover.primary.count()
    rec = None
    if old.user_vectors and new.user_vectors and interactions is not None:
        rec = _recommendations(old, new, interactions, sample, n_items, pace)
    found = figures(rec, nn, n_items, K)
    return {key: float(found[key]) for key in GAUGES if found.get(key) is not None}


class Pacer:
    """Called after each step of work: sleeps `ratio` times as long as the step took."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.last = time.perf_counter()

    def __call__(self) -> None:
        time.sleep((time.perf_counter() - self.last) * self.ratio)
        self.last = time.perf_counter()


def _read(store: VectorStore, ids: list[str], pace: Pacer) -> tuple[np.ndarray, list]:
    """`read_store` (vectors and neighbour ids of `ids`), a paced step at a time."""
    bar = Progress(len(ids), "drift", "items", enabled=False)
    vectors, hits = [], []
    for start in range(0, len(ids), STEP):
        part_vectors, part_hits = read_store(store, ids[start : start + STEP], K, bar)
        vectors.append(part_vectors)
        hits += part_hits
        pace()
    return np.concatenate(vectors), hits


def _fetch_ids(store: VectorStore, ids: Sequence[str], pace: Pacer) -> dict[str, np.ndarray]:
    out = {}
    for start in range(0, len(ids), STEP * 4):
        found, vectors = store.fetch_vectors(list(ids[start : start + STEP * 4]))
        out |= dict(zip(found, vectors, strict=True))
        pace()
    return out


def _sample_ids(
    old: Space, new: Space, interactions: Interactions | None, size: int, pace: Pacer
) -> list[str]:
    candidates = [i for i, _ in interactions.popularity] if interactions is not None else []
    rng = np.random.default_rng(SEED)
    queries = rng.standard_normal((max(1, size // K), new.dim)).astype(np.float32)
    for start in range(0, len(queries), STEP):
        for hits in new.failover.primary.search(queries[start : start + STEP], K):
            candidates += hits.ids
        pace()
    unique = list(dict.fromkeys(candidates))
    unique = [unique[i] for i in sample_indices(len(unique), 4 * size, SEED)]
    held = _fetch_ids(old.failover.primary, unique, pace).keys()
    held = held & _fetch_ids(new.failover.primary, unique, pace).keys()
    both = [i for i in unique if i in held]
    return [both[i] for i in sample_indices(len(both), size, SEED)]


def _lists(
    space: Space, users: list[str], seen: list[frozenset[str]], pace: Pacer
) -> list[list[str]]:
    matrix = np.stack([space.user_vectors[u] for u in users]).astype(np.float32)
    out: list[list[str]] = []
    for start in range(0, len(users), STEP):
        part = slice(start, start + STEP)
        hits = space.failover.primary.search(matrix[part], K, exclude=seen[part])
        out += [list(h.ids) for h in hits]
        pace()
    return out


def _scores(space: Space, user: str, items: dict[str, np.ndarray], ids: list[str]) -> Any:
    """How `space`'s store ranks `ids` for `user`: higher is nearer, by its metric."""
    vectors = np.stack([items[i] for i in ids])
    query = space.user_vectors[user]
    metric = space.failover.primary.metric
    if metric == "l2":
        return -np.sum((vectors - query) ** 2, axis=1)
    if metric == "cosine":
        vectors = l2_normalize(vectors, zero_rows="keep")
    return vectors @ query


def _recommendations(
    old: Space, new: Space, interactions: Interactions, size: int, n_items: int, pace: Pacer
) -> Recommendations | None:
    """Both generations' lists for a seeded sample of the known users, overlap@k, and
    Kendall tau-b over each user's union of the two lists, every item scored by both; None
    without users known to both."""
    known = [u for u in interactions.users["user_id"] if u in old.user_vectors]
    known = [u for u in known if u in new.user_vectors]
    users = [known[i] for i in sample_indices(len(known), size, SEED)]
    if not users:
        return None
    seen = [interactions.seen.get(u, frozenset()) for u in users]
    lists = [_lists(space, users, seen, pace) for space in (old, new)]
    codes: dict[str, int] = {}
    a, b = encode_ids(lists[0], K, codes), encode_ids(lists[1], K, codes)
    union = list(codes)
    items = [_fetch_ids(space.failover.primary, union, pace) for space in (old, new)]
    tau = np.full(len(users), np.nan)
    for r, user in enumerate(users):
        both = [i for i in dict.fromkeys(lists[0][r] + lists[1][r]) if i in items[0]]
        both = [i for i in both if i in items[1]]
        if len(both) > 1:
            x, y = (_scores(s, user, v, both) for s, v in zip((old, new), items, strict=True))
            tau[r] = kendall_tau_b(x, y)
        if r % STEP == STEP - 1:
            pace()
    mean_seen = float(np.mean([len(s) for s in seen])) if seen else 0.0
    return Recommendations(
        old=a, new=b, overlap=overlap_at_k(a, b, K), tau=tau, candidates=n_items - mean_seen
    )
