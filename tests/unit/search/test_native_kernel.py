"""The compiled probe and scan (`services/search/_scan.c`): built by the install, and the same
answers as the numpy paths they replace, ties and edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from services.search import index as index_module
from services.search import quantizer as quantizer_module
from services.search.index import build_ivf
from services.search.kernel import native
from tests.unit.search.conftest import clustered

N, DIM = 4_000, 40

pytestmark = pytest.mark.skipif(native is None, reason="CAPSEARCH_NO_NATIVE is set")


def test_the_install_built_the_kernel() -> None:
    assert native is not None and native.kernel in ("avx2", "plain")


@pytest.fixture(scope="module")
def index_and_queries():  # type: ignore[no-untyped-def]
    x = clustered(N, DIM, centers=25)
    x[1::97] = x[::97][: x[1::97].shape[0]]  # exact duplicates under other ids: tied scores
    ids = np.arange(N, dtype=np.int64)[::-1] * 3 + 1  # ids not in arena order
    index = build_ivf(ids, x, n_clusters=50, pca_components=12, seed=4)
    rng = np.random.default_rng(9)
    q = x[rng.integers(0, N, 60)] + 0.05 * rng.normal(size=(60, DIM)).astype(np.float32)
    return index, np.concatenate([q, x[:5]]).astype(np.float32)  # and queries ON duplicates


@pytest.mark.parametrize(("k", "nprobe"), [(1, 1), (10, 3), (50, 8), (400, 50)])
def test_native_scan_equals_the_numpy_path(index_and_queries, monkeypatch, k: int,  # type: ignore[no-untyped-def]
                                           nprobe: int) -> None:
    index, queries = index_and_queries
    fast = [index.search(q, k, nprobe) for q in queries]
    monkeypatch.setattr(index_module, "native", None)  # the probe stays native: same lists
    for q, (ids, scores) in zip(queries, fast, strict=True):
        want_ids, want_scores = index.search(q, k, nprobe)
        assert np.allclose(scores, want_scores, atol=1e-5)
        # the same ranking; two float sums can swap only scores within rounding of each other
        differ = ids != want_ids
        assert np.all(np.abs(scores[differ] - want_scores[differ]) < 1e-5)
        assert set(ids[scores > scores[-1] + 1e-5]) == \
            set(want_ids[want_scores > want_scores[-1] + 1e-5])


@pytest.mark.parametrize("nprobe", [1, 4, 20])
def test_native_probe_is_the_two_stage_probe_with_an_exact_short_list(index_and_queries,  # type: ignore[no-untyped-def]
                                                                       monkeypatch,
                                                                       nprobe: int) -> None:
    index, queries = index_and_queries
    qz = index.quantizer
    m = quantizer_module.PROBE_SHORTLIST * nprobe + quantizer_module.PROBE_MIN_SHORTLIST
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    native_probes = [qz.probe_fast(q, nprobe) for q in queries]
    for q, got in zip(queries, native_probes, strict=True):
        stage1 = qz._red_m2 @ (qz.components @ q) + qz._probe_bias
        short = np.argsort(stage1, kind="stable")[:m]
        stage2 = qz.centroids[short] @ q - qz._half_sq[short]
        assert got.tolist() == short[np.argsort(-stage2, kind="stable")[:nprobe]].tolist()
    monkeypatch.setattr(quantizer_module, "native", None)
    # numpy's short list is a sampled approximation of the same one: nearly always equal
    agree = sum(set(qz.probe_fast(q, nprobe).tolist()) == set(got.tolist())
                for q, got in zip(queries, native_probes, strict=True))
    assert agree >= 0.9 * len(queries)


def test_native_probe_ranks_like_the_exact_full_space_probe(index_and_queries) -> None:  # type: ignore[no-untyped-def]
    index, queries = index_and_queries
    qz = index.quantizer
    for q in queries:
        q = q / np.linalg.norm(q)
        dist = qz._sq - 2.0 * (qz.centroids @ q)
        out = np.empty(7, dtype=np.int64)
        # a short list as long as K: stage 1 keeps everything, stage 2 is the exact ranking
        got = native.probe(qz.components, qz._red_m2, qz._probe_bias, qz.centroids,
                           qz._half_sq, q, qz.n_clusters, out)
        assert got == 7
        assert out.tolist() == np.argsort(dist, kind="stable")[:7].tolist()


@pytest.mark.parametrize("k", [1, 5, 64, 300, 1000])
def test_scan_keeps_the_k_best_best_first_ties_by_id(k: int) -> None:
    rng = np.random.default_rng(k)
    arena = rng.normal(size=(700, 16)).astype(np.float32)
    arena[100:200] = arena[0]  # 101 rows tied with row 0
    ids = rng.permutation(700).astype(np.int64)
    bounds = np.array([[0, 300], [300, 300], [300, 700]], dtype=np.int64)
    q = arena[0].copy()
    out_ids, out_scores = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.float32)
    found = native.scan(arena, ids, bounds, np.array([2, 1, 0]), q, out_ids, out_scores)
    scores = arena @ q
    order = np.lexsort((ids, -scores))[:k]
    assert found == min(k, 700)
    assert out_ids[:found].tolist() == ids[order].tolist()
    assert np.allclose(out_scores[:found], scores[order], atol=1e-5)


def test_scan_defers_to_numpy_when_a_probed_list_is_not_contiguous() -> None:
    arena = np.eye(4, dtype=np.float32)
    ids = np.arange(4, dtype=np.int64)
    bounds = np.array([[0, 2], [-1, -1]], dtype=np.int64)
    out_ids, out_scores = np.empty(2, dtype=np.int64), np.empty(2, dtype=np.float32)
    args = (arena, ids, bounds)
    assert native.scan(*args, np.array([0]), arena[1], out_ids, out_scores) == 2
    assert out_ids.tolist() == [1, 0]
    assert native.scan(*args, np.array([0, 1]), arena[1], out_ids, out_scores) == -1


def test_scan_rejects_bad_buffers_with_clear_errors() -> None:
    arena = np.eye(4, dtype=np.float32)
    ids = np.arange(4, dtype=np.int64)
    bounds = np.array([[0, 4]], dtype=np.int64)
    out_ids, out_scores = np.empty(2, dtype=np.int64), np.empty(2, dtype=np.float32)
    with pytest.raises(TypeError, match="arena"):
        native.scan(arena.astype(np.float64), ids, bounds, np.array([0]), arena[0], out_ids,
                    out_scores)
    with pytest.raises(IndexError, match="probe out of range"):
        native.scan(arena, ids, bounds, np.array([3]), arena[0], out_ids, out_scores)
    with pytest.raises(IndexError, match="bounds"):
        native.scan(arena, ids, np.array([[0, 9]]), np.array([0]), arena[0], out_ids,
                    out_scores)
    with pytest.raises(ValueError, match="sizes"):
        native.scan(arena, ids[:3], bounds, np.array([0]), arena[0], out_ids, out_scores)
    with pytest.raises(TypeError, match="7 arguments"):
        native.scan(arena, ids)
