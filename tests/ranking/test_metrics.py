import math

import numpy as np
import pytest

from embedrec.ranking.metrics import (
    catalog_coverage,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    map_score,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

# Three users, k = 4, catalogue of 20 items.
#   A: top [1, 2, 3, 4], relevant {1, 3, 9}            -> hits at ranks 1 and 3
#   B: top [5, 6, 7, 8], relevant {8, 10, 11, 12, 13}  -> hit at rank 4
#   C: top [1, 2, -1, -1] (short list), relevant {20}  -> no hit
TOPK = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, -1, -1]])
TRUTH = [(0, 1), (0, 3), (0, 9), (1, 8), (1, 10), (1, 11), (1, 12), (1, 13), (2, 19)]
N_REL = np.array([3, 5, 1])


def hits() -> np.ndarray:
    users, items = zip(*TRUTH, strict=True)
    return hit_matrix(TOPK, np.array(users), np.array(items), n_items=20)


def ln(x: float) -> float:
    return math.log(x)


def test_hit_matrix() -> None:
    expected = [[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert hits().astype(int).tolist() == expected


def test_hit_matrix_ignores_padding_even_if_item_minus_one_would_match() -> None:
    got = hit_matrix(np.array([[-1, 0]]), np.array([0]), np.array([0]), n_items=3)
    assert got.tolist() == [[False, True]]


def test_precision() -> None:
    assert precision_at_k(hits(), 4) == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert precision_at_k(hits(), 2) == pytest.approx((1 / 2 + 0 + 0) / 3)


def test_recall() -> None:
    assert recall_at_k(hits(), N_REL, 4) == pytest.approx((2 / 3 + 1 / 5 + 0) / 3)


def test_ndcg_binary() -> None:
    a = (1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3) + 1 / ln(4))
    b = (1 / ln(5)) / sum(1 / ln(1 + r) for r in range(1, 5))  # idcg capped at k=4
    assert ndcg_at_k(hits(), N_REL, 4) == pytest.approx((a + b + 0) / 3)


def test_ndcg_perfect_ranking_is_one() -> None:
    assert ndcg_at_k(np.array([[True, True, False]]), np.array([2]), 3) == pytest.approx(1.0)


def test_map_divides_by_all_relevant() -> None:
    a = (1 / 1 + 2 / 3) / 3
    b = (1 / 4) / 5
    assert map_score(hits(), N_REL, 4) == pytest.approx((a + b + 0) / 3)


def test_map_at_k_divides_by_min_relevant_k() -> None:
    a = (1 / 1 + 2 / 3) / 3
    b = (1 / 4) / 4
    assert map_at_k(hits(), N_REL, 4) == pytest.approx((a + b + 0) / 3)


def test_hit_rate() -> None:
    assert hit_rate_at_k(hits(), 4) == pytest.approx(2 / 3)
    assert hit_rate_at_k(hits(), 3) == pytest.approx(1 / 3)


def test_catalog_coverage_counts_distinct_items_not_padding() -> None:
    assert catalog_coverage(TOPK, 20) == pytest.approx(8 / 20)


def test_ranking_metrics_keys() -> None:
    out = ranking_metrics(TOPK, hits(), N_REL, 4, 20)
    assert set(out) == {"ndcg@4", "map", "map@4", "precision@4", "recall@4", "hit_rate@4",
                        "coverage"}  # fmt: skip
    assert out["map"] == pytest.approx(map_score(hits(), N_REL, 4))


def test_users_without_relevant_items_are_rejected() -> None:
    with pytest.raises(ValueError, match="row 1 has no relevant items"):
        recall_at_k(hits()[:2], np.array([3, 0]), 4)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_relevant has shape"):
        ndcg_at_k(hits(), np.array([1, 2]), 4)
