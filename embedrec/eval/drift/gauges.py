"""How far a candidate model's recommendations moved from the live one's: pure metrics over
arrays, and the comparison of two sets of user and item vectors that applies them.

Recommendation lists are rows of item indices (best first, -1 where a list is short), as
`ranking.metrics.top_k` returns them. The comparison scores the same seeded sample of users and
items under both models, so that every difference comes from the models, not the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedrec.common.progress import Progress
from embedrec.common.vectors import l2_normalize
from embedrec.ranking.metrics import top_k

BATCH = 256
"""Users (or items) scored against the catalog at once: a (BATCH, n_items) score matrix."""


# ------------------------------------------------------------------------------ metrics


def _sets(lists: np.ndarray) -> list[set[int]]:
    return [{int(i) for i in row if i >= 0} for row in lists]


def overlap_at_k(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row, |A ∩ B| / k for the top-k lists A (row of `a`) and B (row of `b`).

    1 when both models recommend the same k items in any order, 0 when they share none.
    Two lists drawn at random from n candidates share k/n of their items on average (the
    chance level the report states beside it)."""
    if a.shape != b.shape:
        raise ValueError(f"overlap_at_k: lists of shape {a.shape} and {b.shape}")
    return np.array([len(x & y) / k for x, y in zip(_sets(a), _sets(b), strict=True)])


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, |A ∩ B| / |A ∪ B| (Jaccard 1901) of the sets in rows of `a` and `b`; -1
    entries are padding. Two empty rows count as identical (1)."""
    if a.shape != b.shape:
        raise ValueError(f"jaccard: rows of shape {a.shape} and {b.shape}")
    return np.array(
        [len(x & y) / len(x | y) if x | y else 1.0 for x, y in zip(_sets(a), _sets(b), strict=True)]
    )


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (Kendall 1945) of two score vectors over the same items:
    (concordant - discordant pairs) / sqrt(pairs untied in x * pairs untied in y).

    1 when both order every pair the same way, -1 when reversed, near 0 when unrelated;
    NaN when either vector is constant (no order to compare)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau_b: vectors of shape {x.shape} and {y.shape}")
    upper = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[upper]
    sy = np.sign(y[:, None] - y[None, :])[upper]
    untied = np.count_nonzero(sx) * np.count_nonzero(sy)
    return float(np.sum(sx * sy) / np.sqrt(untied)) if untied else float("nan")


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Catalog coverage: the share of the `n_items` catalog items that appear in at least
    one recommendation list (Ge et al., RecSys 2010)."""
    return len({int(i) for i in lists.ravel() if i >= 0}) / n_items


def recommendation_counts(lists: np.ndarray, n_items: int) -> np.ndarray:
    """How many lists each catalog item appears in (0 for items never recommended)."""
    flat = lists.ravel()
    return np.bincount(flat[flat >= 0], minlength=n_items)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of how often each item is recommended: with counts sorted
    ascending x_1..x_n, G = sum_i (2i - n - 1) x_i / (n * sum x).

    0 when every item is recommended equally often; (n-1)/n when one item takes every
    slot. Popularity concentration as in Fleder & Hosanagar (2009); items never recommended
    count as zeros, so a model that covers less of the catalog scores higher."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and quantiles (min, p5, p25, p50, p75, p95, max); NaNs are
    left out."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"count": 0}
    qs = np.quantile(v, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
    names = ("min", "p5", "p25", "p50", "p75", "p95", "max")
    return {
        "count": len(v),
        "mean": float(v.mean()),
        "std": float(v.std()),
        **{n: float(q) for n, q in zip(names, qs, strict=True)},
    }


# ------------------------------------------------------------------------------ comparison


@dataclass
class Vectors:
    """One model's vectors for the sampled users and the whole catalog."""

    users: np.ndarray
    items: np.ndarray


@dataclass
class Recommendations:
    """Both models' top-k lists for the sampled users, and what they agree on."""

    old: np.ndarray
    new: np.ndarray
    overlap: np.ndarray
    tau: np.ndarray
    candidates: float
    """Mean number of items a user could be recommended (the catalog less their seen items)."""


@dataclass
class Neighbours:
    """Each sampled item's k nearest neighbours under both models, and their vector norms."""

    old: np.ndarray
    new: np.ndarray
    jaccard: np.ndarray
    old_norms: np.ndarray
    new_norms: np.ndarray


def _union_tau(old_scores: np.ndarray, new_scores: np.ndarray, a: np.ndarray, b: np.ndarray):
    out = np.empty(len(a))
    for r in range(len(a)):
        union = np.union1d(a[r][a[r] >= 0], b[r][b[r] >= 0])
        out[r] = kendall_tau_b(old_scores[r, union], new_scores[r, union])
    return out


def recommend_both(
    old: Vectors, new: Vectors, seen: Sequence[np.ndarray], k: int, progress: bool = True
) -> Recommendations:
    """Top-k lists under both models (each user's seen items left out) with overlap@k and
    Kendall's tau-b over the union of the two lists, each item scored by both models.

    Over the union, an item only one model ranks in its top k is a discordant pair with the
    other model's picks, so tau is 1 for identical lists, falls below 0 as the lists part
    and is far below 0 when they share nothing: it reads agreement in order and in
    membership at once, where overlap@k reads membership only."""
    n_users, n_items = len(old.users), len(old.items)
    parts: dict[str, list[np.ndarray]] = {"old": [], "new": [], "overlap": [], "tau": []}
    with Progress(n_users, "drift: recommendations", "users", enabled=progress) as bar:
        for start in range(0, n_users, BATCH):
            rows = range(start, min(start + BATCH, n_users))
            mask = np.zeros((len(rows), n_items), dtype=bool)
            for j, r in enumerate(rows):
                mask[j, seen[r]] = True
            old_scores = old.users[rows.start : rows.stop] @ old.items.T
            new_scores = new.users[rows.start : rows.stop] @ new.items.T
            a, b = top_k(old_scores, mask, k), top_k(new_scores, mask, k)
            parts["old"].append(a)
            parts["new"].append(b)
            parts["overlap"].append(overlap_at_k(a, b, k))
            parts["tau"].append(_union_tau(old_scores, new_scores, a, b))
            bar.update(len(rows), overlap=float(np.mean(parts["overlap"][-1])))
    n_seen = np.array([len(s) for s in seen], dtype=np.float64)
    return Recommendations(
        **{name: np.concatenate(p) for name, p in parts.items()},
        candidates=float(np.mean(n_items - n_seen)) if n_users else float(n_items),
    )


def nearest(unit: np.ndarray, sample: np.ndarray, k: int) -> np.ndarray:
    """The k nearest catalog items to each sampled item by inner product of the rows of
    `unit` (cosine, for unit rows), the item itself left out."""
    scores = unit[sample] @ unit.T
    scores[np.arange(len(sample)), sample] = -np.inf
    return top_k(scores, None, k)


def neighbours_both(
    old_items: np.ndarray, new_items: np.ndarray, sample: np.ndarray, k: int, progress: bool = True
) -> Neighbours:
    """Nearest-neighbour sets of the sampled items under both models, their Jaccard, and the
    sampled items' vector norms."""
    old_nn, new_nn = [], []
    old_unit = l2_normalize(old_items, zero_rows="keep")
    new_unit = l2_normalize(new_items, zero_rows="keep")
    with Progress(len(sample), "drift: neighbours", "items", enabled=progress) as bar:
        for start in range(0, len(sample), BATCH):
            part = sample[start : start + BATCH]
            old_nn.append(nearest(old_unit, part, k))
            new_nn.append(nearest(new_unit, part, k))
            bar.update(len(part))
    a = np.concatenate(old_nn) if old_nn else np.empty((0, k), dtype=np.int64)
    b = np.concatenate(new_nn) if new_nn else np.empty((0, k), dtype=np.int64)
    return Neighbours(
        old=a,
        new=b,
        jaccard=jaccard(a, b),
        old_norms=np.linalg.norm(old_items[sample], axis=1),
        new_norms=np.linalg.norm(new_items[sample], axis=1),
    )


def sample_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A seeded sample of `size` indices out of `n` (all of them, in order, when size is
    None or at least n), sorted so that batches read memory in order."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
