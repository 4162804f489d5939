"""Ranks and recalls of the in-memory retrieval protocol (training choices, bench/)."""

from __future__ import annotations

import numpy as np

from services.caption.training.retrieval_metrics import caption_ranks, summarise


def test_a_query_ranks_its_own_photo_by_cosine_and_ties_count_against_it() -> None:
    photos = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    queries = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 0.0]])
    ranks = caption_ranks(photos, queries, np.array([0, 1, 0]))
    assert ranks.tolist() == [2, 1, 2]  # photo 2 equals photo 0: a tie ranks before it


def test_summarise_gives_recalls_in_percent_and_the_median_rank() -> None:
    out = summarise(np.array([1, 1, 3, 7, 20]))
    assert out == {"r1": 40.0, "r5": 60.0, "r10": 80.0, "median_rank": 3.0}
