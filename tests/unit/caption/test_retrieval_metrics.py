"""Extrapolating held-out ranks from a small pool to a larger one (bench/quality_cv.py)."""

from __future__ import annotations

import numpy as np

from services.caption.training.retrieval_metrics import extrapolate, summarise


def test_same_pool_keeps_the_figures_of_uniform_ranks() -> None:
    ranks = np.arange(1, 101).repeat(5)  # every rank of a 100 pool equally often
    same = extrapolate(ranks, 100, 100)
    measured = summarise(ranks)
    for key in ("r1", "r5", "r10"):
        assert abs(same[key] - measured[key]) <= 1.0
    assert abs(same["median_rank"] - measured["median_rank"]) <= 2


def test_a_larger_pool_lowers_recall_and_raises_the_median() -> None:
    ranks = np.random.default_rng(0).geometric(0.3, 400).clip(max=100)
    small, large = extrapolate(ranks, 100, 100), extrapolate(ranks, 100, 500)
    assert large["r1"] < small["r1"] and large["r10"] < small["r10"]
    assert large["median_rank"] > small["median_rank"]


def test_the_median_agrees_with_the_recalls() -> None:
    # half the queries at rank 1, half spread over ranks 2-39 of a 100 pool: most rank-1
    # queries stay near the top of 500 while the rest spread 5x, so the median of per-query
    # medians (4.5 here) sat below ranks whose recall was under 50 %
    ranks = np.concatenate([np.ones(250, int), np.random.default_rng(0).integers(2, 40, 250)])
    est = extrapolate(ranks, 100, 500)
    assert est["r5"] < 50 and est["r10"] < 50
    assert est["median_rank"] > 10
