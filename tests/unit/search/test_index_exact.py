"""The exact (brute-force) index."""

from __future__ import annotations

import numpy as np

from services.search.index import ExactIndex
from tests.unit.search.conftest import clustered


def test_exact_returns_the_true_nearest_neighbours() -> None:
    x = clustered(500, 16)
    index = ExactIndex(16)
    index.add(np.arange(500) + 1, x)
    q = x[42] + 0.01
    ids, scores = index.search(q, 5)
    q_unit = q / np.linalg.norm(q)
    truth = np.argsort(-(x @ q_unit))[:5] + 1
    assert ids.tolist() == truth.tolist()
    assert np.all(np.diff(scores) <= 0)
    assert abs(scores[0] - float(x[truth[0] - 1] @ q_unit)) < 1e-5


def test_exact_add_of_an_existing_id_replaces_it() -> None:
    x = clustered(50, 16)
    index = ExactIndex(16)
    index.add(np.arange(50) + 1, x)
    index.add([7], x[20:21])
    ids, scores = index.search(x[20], 3)
    assert len(index) == 50
    assert sorted(ids[:2].tolist()) == [7, 21]
    assert scores[0] > 0.9999 and scores[1] > 0.9999


def test_exact_repeated_id_within_a_batch_keeps_the_last_vector() -> None:
    x = clustered(3, 16)
    index = ExactIndex(16)
    index.add([5, 5], x[:2])
    ids, scores = index.search(x[1], 5)
    assert ids.tolist() == [5]
    assert scores[0] > 0.9999


def test_exact_remove_takes_ids_out() -> None:
    x = clustered(50, 16)
    index = ExactIndex(16)
    index.add(np.arange(50) + 1, x)
    assert index.remove([3, 4, 999]) == 2
    ids, _ = index.search(x[2], 50)
    assert len(index) == 48
    assert 3 not in ids and 4 not in ids


def test_exact_empty_index_returns_no_hits() -> None:
    ids, scores = ExactIndex(8).search(np.ones(8), 10)
    assert ids.size == 0 and scores.size == 0


def test_exact_remove_of_a_repeated_id_counts_it_once() -> None:
    index = ExactIndex(16)
    index.add([1, 2], clustered(2, 16))
    assert index.remove([1, 1]) == 1
    assert len(index) == 1
