"""The PCA + K-means inverted-file index."""

from __future__ import annotations

import numpy as np

from services.search.index import ExactIndex, build_ivf, default_n_clusters
from tests.unit.search.conftest import clustered

N, DIM = 5_000, 64


def _queries(x: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, x.shape[0], n)] + 0.1 * rng.normal(size=(n, x.shape[1]))


def test_ivf_recall_at_10_against_exact_is_at_least_095() -> None:
    x = clustered(N, DIM, centers=50)
    ids = np.arange(N) + 1
    ivf = build_ivf(ids, x, seed=0)
    exact = ExactIndex(DIM)
    exact.add(ids, x)
    recall = np.mean([
        len(set(ivf.search(q, 10, nprobe=16)[0]) & set(exact.search(q, 10)[0])) / 10
        for q in _queries(x, 100)])
    assert ivf.n_clusters == default_n_clusters(N)
    assert recall >= 0.95


def test_ivf_is_deterministic_for_a_seed() -> None:
    x = clustered(1_000, 32)
    a = build_ivf(np.arange(1_000), x, n_clusters=20, pca_components=8, seed=3)
    b = build_ivf(np.arange(1_000), x, n_clusters=20, pca_components=8, seed=3)
    assert np.array_equal(a.quantizer.centroids, b.quantizer.centroids)
    for q in _queries(x, 10):
        assert np.array_equal(a.search(q, 10, 4)[0], b.search(q, 10, 4)[0])


def test_ivf_add_of_an_existing_id_replaces_it() -> None:
    x = clustered(1_000, 32)
    ivf = build_ivf(np.arange(1_000), x, n_clusters=20, pca_components=8)
    far = x[500]  # most likely another cluster than id 0's
    ivf.add([0], far[None, :])
    ids, _ = ivf.search(far, 1_000, nprobe=20)
    assert len(ivf) == 1_000
    assert ids.tolist().count(0) == 1
    assert ivf.lists_of([0])[0] == ivf.assign(far)[0]


def test_ivf_remove_takes_ids_out() -> None:
    x = clustered(1_000, 32)
    ivf = build_ivf(np.arange(1_000), x, n_clusters=20, pca_components=8)
    assert ivf.remove([10, 11]) == 2
    ids, _ = ivf.search(x[10], 1_000, nprobe=20)
    assert len(ivf) == 998
    assert 10 not in ids and 11 not in ids
    assert ivf.lists_of([10]).tolist() == [-1]


def test_ivf_files_every_vector_in_exactly_one_list() -> None:
    x = clustered(1_000, 32)
    ivf = build_ivf(np.arange(1_000), x, n_clusters=20, pca_components=8)
    assert ivf.list_sizes().sum() == 1_000
