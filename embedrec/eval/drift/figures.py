"""The drift figures as one JSON-ready dict: what `embedrec drift` reports and thresholds, and
the service's drift gauges read. Apart from the report and its plots (drift_report.py), so
that a service computing them need not load matplotlib."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedrec.eval.drift.gauges import (
    Neighbours,
    Recommendations,
    coverage,
    gini,
    recommendation_counts,
    summary,
)


def _mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else None


def figures(rec: Recommendations | None, nn: Neighbours, n_items: int, k: int) -> dict[str, Any]:
    """Every figure of the comparison; the `*_mean`, `*_increase`, `*_drop` and `*_shift`
    keys are the ones thresholds read (drift_config.CHECKS)."""
    old_mean, new_mean = float(nn.old_norms.mean()), float(nn.new_norms.mean())
    out: dict[str, Any] = {
        "k": k,
        "catalog_items": n_items,
        "sampled_items": len(nn.jaccard),
        "neighbours_by": "cosine" if rec is not None else "each store's own search",
        "neighbour_jaccard_mean": _mean(nn.jaccard),
        "neighbour_jaccard": summary(nn.jaccard),
        "norms_old": summary(nn.old_norms),
        "norms_new": summary(nn.new_norms),
        "norm_shift": abs(new_mean - old_mean) / old_mean if old_mean else None,
        "norm_relative_change": summary(
            np.abs(nn.new_norms - nn.old_norms) / np.where(nn.old_norms > 0, nn.old_norms, 1)
        ),
    }
    if rec is None:
        return out
    cov_old, cov_new = coverage(rec.old, n_items), coverage(rec.new, n_items)
    gini_old = gini(recommendation_counts(rec.old, n_items))
    gini_new = gini(recommendation_counts(rec.new, n_items))
    return {
        **out,
        "sampled_users": len(rec.overlap),
        "overlap_mean": _mean(rec.overlap),
        "overlap": summary(rec.overlap),
        "overlap_chance": k / rec.candidates if rec.candidates else None,
        "overlap_histogram": np.bincount(
            np.rint(rec.overlap * k).astype(int), minlength=k + 1
        ).tolist(),
        "rank_correlation_method": "kendall_tau_b over the union of the two lists",
        "rank_correlation_mean": _mean(rec.tau),
        "rank_correlation": summary(rec.tau),
        "coverage_old": cov_old,
        "coverage_new": cov_new,
        "coverage_drop": cov_old - cov_new,
        "gini_old": gini_old,
        "gini_new": gini_new,
        "gini_increase": gini_new - gini_old,
    }
