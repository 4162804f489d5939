"""The IVF single-query fast path: full-vector scan of the probed lists, the cheap two-stage
probe, and the sampled selections (top-k, short lists) it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from services.search.index import IVFIndex, build_ivf
from services.search.postings import about_smallest, smallest, top_k
from tests.unit.search.conftest import clustered

N, DIM = 3_000, 48


def _queries(x: np.ndarray, n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (x[rng.integers(0, x.shape[0], n)] + 0.1 * rng.normal(size=(n, x.shape[1]))
            ).astype(np.float32)


def _brute_force_in_lists(index: IVFIndex, ids: np.ndarray, x: np.ndarray, q: np.ndarray,
                          k: int, nprobe: int) -> tuple[list[int], np.ndarray]:
    """The exact top-k among the members of the lists `probe` picks, ties by id."""
    q = q / np.linalg.norm(q)
    lists = index.lists_of(ids)
    members = np.isin(lists, index.quantizer.probe(q, nprobe))
    cand_ids, scores = ids[members], x[members] @ q
    order = np.lexsort((cand_ids, -scores))[:k]
    return cand_ids[order].tolist(), scores[order]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, DIM, centers=30), np.arange(N, dtype=np.int64) * 7 + 3


@pytest.mark.parametrize("nprobe", [1, 3, 10])
def test_full_scan_is_the_exact_answer_within_the_probed_lists(data, nprobe: int) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    index = build_ivf(ids, x, n_clusters=40, pca_components=16, seed=2)
    assert index.scan == "full"
    for q in _queries(x, 40):
        got_ids, got_scores = index.search(q, 10, nprobe)
        want_ids, want_scores = _brute_force_in_lists(index, ids, x, q, 10, nprobe)
        assert got_ids.tolist() == want_ids
        assert np.allclose(got_scores, want_scores, atol=1e-5)


def test_full_scan_gathers_lists_changed_since_the_load(data) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    index = build_ivf(ids, x, n_clusters=40, pca_components=16, seed=2)
    # appends and removals make some lists non-contiguous in the arena (scanned by gather)
    extra = clustered(200, DIM, centers=30, seed=11)
    extra_ids = np.arange(200, dtype=np.int64) + 10 * N
    index.add(extra_ids, extra)
    index.remove(ids[::50])
    views = index._lists.snapshot().lists
    assert any(lo < 0 for _, rows, lo, _ in views if rows.shape[0])
    assert any(lo >= 0 for _, rows, lo, _ in views if rows.shape[0])
    all_ids = np.concatenate([np.delete(ids, np.s_[::50]), extra_ids])
    all_x = np.concatenate([np.delete(x, np.s_[::50], axis=0), extra])
    for q in _queries(x, 30, seed=9):
        for nprobe in (1, 4):
            got_ids, _ = index.search(q, 10, nprobe)
            assert got_ids.tolist() == _brute_force_in_lists(index, all_ids, all_x, q, 10,
                                                             nprobe)[0]


def test_pca_scan_with_a_rerank_of_everything_equals_the_full_scan(data) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    full = build_ivf(ids, x, n_clusters=40, pca_components=16, seed=2)
    pca = IVFIndex(full.quantizer, scan="pca", rerank=N)
    pca.add(ids, x)
    assert pca.nbytes > full.nbytes + N * 17 * 4 * 0.9  # it keeps a PCA row per vector
    for q in _queries(x, 30):
        a_ids, a_scores = full.search(q, 10, 5)
        b_ids, b_scores = pca.search(q, 10, 5)
        assert a_ids.tolist() == b_ids.tolist()
        assert np.allclose(a_scores, b_scores, atol=1e-5)


@pytest.mark.parametrize("scan", ["full", "pca"])
def test_batched_search_answers_what_single_searches_answer(data, scan: str) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    index = IVFIndex(build_ivf(ids, x, n_clusters=40, pca_components=16, seed=2).quantizer,
                     scan=scan)  # type: ignore[arg-type]
    index.add(ids, x)
    queries = _queries(x, 70)
    batch_ids, batch_scores = index.search_batch(queries, 10, 6)
    for q, row_ids, row_scores in zip(queries, batch_ids, batch_scores, strict=True):
        one_ids, one_scores = index.search(q, 10, 6)
        assert row_ids.tolist() == one_ids.tolist()
        assert np.allclose(row_scores, one_scores, atol=1e-5)


def test_full_scan_of_float16_storage_finds_each_vector_itself(data) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    index = build_ivf(ids, x, n_clusters=40, pca_components=16, storage="float16")
    assert index.scan == "pca"  # float16 defaults to the PCA scan + re-rank
    both = IVFIndex(index.quantizer, storage="float16", scan="full")
    both.add(ids, x)
    for j in (0, 17, 2_999):
        for idx in (index, both):
            found, scores = idx.search(x[j], 1, 4)
            assert found[0] == ids[j] and abs(scores[0] - 1.0) < 1e-3


def test_unknown_scan_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    quantizer = build_ivf(ids[:500], x[:500], n_clusters=8, pca_components=8).quantizer
    with pytest.raises(ValueError):
        IVFIndex(quantizer, scan="sideways")  # type: ignore[arg-type]


def test_the_fast_probe_finds_the_nearest_centroids(data) -> None:  # type: ignore[no-untyped-def]
    x, ids = data
    quantizer = build_ivf(ids, x, n_clusters=200, pca_components=16, seed=2).quantizer
    agree = 0
    for q in _queries(x, 100):
        q = q / np.linalg.norm(q)
        exact = np.argsort(quantizer._sq - 2.0 * (quantizer.centroids @ q), kind="stable")[:5]
        fast = quantizer.probe_fast(q, 5)
        assert fast.shape == (5,) and np.unique(fast).shape == (5,)
        assert sorted(quantizer.probe(q, 5).tolist()) == sorted(fast.tolist())
        agree += set(fast.tolist()) == set(exact.tolist())
    assert agree >= 95  # the PCA short list rarely misses one of the nearest five
    assert quantizer.probe_fast(q, 500).tolist() == list(range(200))


@pytest.mark.parametrize("n", [5, 300, 2_000, 20_000])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_top_k_is_the_k_best_with_ties_broken_by_id(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    scores = rng.integers(0, 50, n).astype(np.float32) / 50  # many ties
    ids = rng.permutation(n).astype(np.int64) * 3
    got_ids, got_scores = top_k(scores, ids, k)
    order = np.lexsort((ids, -scores))[:k]
    assert got_ids.tolist() == ids[order].tolist()
    assert got_scores.tolist() == scores[order].tolist()
    # the order of the candidates does not matter
    perm = rng.permutation(n)
    assert top_k(scores[perm], ids[perm], k)[0].tolist() == got_ids.tolist()


def test_top_k_of_nothing_and_of_fewer_than_k() -> None:
    assert top_k(np.zeros(0, np.float32), np.zeros(0, np.int64), 5)[0].shape == (0,)
    ids, scores = top_k(np.array([0.1, 0.9, 0.5], np.float32), np.array([4, 5, 6]), 10)
    assert ids.tolist() == [5, 6, 4] and scores.dtype == np.float32


@pytest.mark.parametrize("n", [100, 1_789, 50_000])
@pytest.mark.parametrize("m", [1, 33, 96])
def test_about_smallest_holds_the_smallest_and_at_least_what_is_asked(n: int, m: int) -> None:
    values = np.random.default_rng(n * m).normal(size=n).astype(np.float32)
    got = about_smallest(values, m, m // 2 + 1)
    assert got.shape[0] >= min(n, m // 2 + 1)
    # a prefix of the sorted order: every value below the largest one kept is kept
    assert np.all(values[np.setdiff1d(np.arange(n), got)] >= values[got].max())
    assert np.all(np.diff(got) > 0)
    assert sorted(smallest(values, m).tolist()) == sorted(np.argsort(values)[:m].tolist())
