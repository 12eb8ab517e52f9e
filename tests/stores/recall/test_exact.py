"""ANN metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedrec.stores.recall import exact as ann


def test_exact_knn_l2_is_plain_euclidean_with_ties():
    base = np.array([[3, 4], [0, 1], [1, 0], [0, -2]], dtype=np.float32)
    dist, rows = ann.exact_knn(base, np.zeros((1, 2), np.float32), 3, "l2")
    assert dist.tolist() == [[1.0, 1.0, 2.0]]  # sqrt distances, not squared
    assert sorted(rows[0, :2].tolist()) == [1, 2] and rows[0, 2] == 3


def test_exact_knn_cosine_and_dot():
    base = np.array([[1, 0], [0, 2], [3, 3]], dtype=np.float32)
    q = np.array([[1, 1]], dtype=np.float32)
    dist, rows = ann.exact_knn(base, q, 3, "cosine")
    assert rows[0, 0] == 2
    assert dist[0] == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2)])
    dist, rows = ann.exact_knn(base, q, 2, "dot")
    assert rows[0].tolist() == [2, 1] and dist[0].tolist() == [-6.0, -2.0]


def test_exact_knn_rejects_k_over_n():
    with pytest.raises(ValueError, match="k=3 exceeds the 2 base vectors"):
        ann.exact_knn(np.zeros((2, 2), np.float32), np.zeros((1, 2), np.float32), 3, "l2")


def test_distances_of_missing_hits_are_infinite():
    base = np.array([[0, 0], [3, 4]], dtype=np.float32)
    d = ann.distances("l2", np.zeros((1, 2), np.float32), base, np.array([[1, -1]]))
    assert d.tolist() == [[5.0, math.inf]]


def test_recall_by_id_counts_true_ids_only():
    true = np.array([[0, 1, 2], [3, 4, 5]])
    found = np.array([[2, 9, 0], [3, -1, -1]])
    assert ann.recall_by_id(true, found).tolist() == [2 / 3, 1 / 3]


def test_tie_aware_recall_uses_the_kth_distance_plus_epsilon():
    true = np.array([[1.0, 2.0, 3.0]] * 3)
    found = np.array(
        [
            [1.0, 3.0009, 2.0],  # within 3 + 1e-3: all count
            [1.0, 3.002, 2.0],  # beyond it: 2 of 3
            [1.0, math.inf, math.inf],  # two missing hits
        ]
    )
    assert ann.recall_tie_aware(true, found).tolist() == [1.0, 2 / 3, 1 / 3]


def test_a_tied_neighbour_counts_for_tie_aware_recall_but_not_by_id():
    base = np.array([[0.0], [1.0], [1.0], [5.0]], dtype=np.float32)
    q = np.zeros((1, 1), np.float32)
    gt_dist, gt_rows = ann.exact_knn(base, q, 2, "l2")
    other = 3 - int(gt_rows[0, 1])  # the duplicate that ground truth did not list
    found = np.array([[0, other]])
    assert ann.recall_by_id(gt_rows, found).tolist() == [0.5]
    found_dist = ann.distances("l2", q, base, found)
    assert ann.recall_tie_aware(gt_dist, found_dist).tolist() == [1.0]


def test_latency_percentiles_interpolate_linearly_in_ms():
    seconds = [i / 1000 for i in range(10, 0, -1)]  # 1..10 ms, unsorted
    # type 7: position p/100 * (n - 1) between order statistics
    # p50: 4.5 -> 5 + 0.5 * 1 = 5.5; p95: 8.55 -> 9 + 0.55 = 9.55; p99: 8.91 -> 9.91
    got = ann.latency_percentiles(seconds)
    assert got == pytest.approx({"p50": 5.5, "p95": 9.55, "p99": 9.91})
    assert ann.latency_percentiles([0.002], (50, 99.9)) == pytest.approx({"p50": 2.0, "p99.9": 2.0})
    with pytest.raises(ValueError):
        ann.latency_percentiles([])


def test_qps():
    assert ann.qps(100, 0.5) == 200
    with pytest.raises(ValueError):
        ann.qps(1, 0.0)


def test_pca_keeps_distances_of_data_in_a_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((6, 2)))[0].T  # 2 orthonormal rows in 6-d
    base = (rng.standard_normal((200, 2)) @ basis).astype(np.float32)
    queries = (rng.standard_normal((5, 2)) @ basis).astype(np.float32)
    rb, rq = ann.pca_reduce(base, queries, 2)
    assert rb.shape == (200, 2) and rq.shape == (5, 2)
    full = np.linalg.norm(queries[:, None] - base[None], axis=-1)
    reduced = np.linalg.norm(rq[:, None] - rb[None], axis=-1)
    np.testing.assert_allclose(reduced, full, atol=1e-4)
    with pytest.raises(ValueError, match="PCA dim"):
        ann.pca_reduce(base, queries, 7)
