"""IVF storage: float16 option, batched queries, arena compaction, binary COPY parsing."""

from __future__ import annotations

import numpy as np
import pytest

from services.search.index import ExactIndex, IVFIndex, build_ivf
from services.search.pgcopy import _HEADER, _TRAILER, _id_vector_dtype, copy_rows_out
from tests.unit.search.conftest import clustered

N, DIM = 4_000, 48


def _recall(index: object, exact: ExactIndex, queries: np.ndarray, nprobe: int) -> float:
    return float(np.mean([
        len(set(index.search(q, 10, nprobe)[0]) & set(exact.search(q, 10)[0])) / 10  # type: ignore[attr-defined]
        for q in queries]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, ExactIndex]:
    x = clustered(N, DIM, centers=40)
    rng = np.random.default_rng(7)
    queries = (x[rng.integers(0, N, 50)] + 0.1 * rng.normal(size=(50, DIM))).astype(np.float32)
    exact = ExactIndex(DIM)
    exact.add(np.arange(N), x)
    return x, queries, exact


def test_float16_storage_keeps_recall_and_halves_the_vector_bytes(data) -> None:  # type: ignore[no-untyped-def]
    x, queries, exact = data
    f32 = build_ivf(np.arange(N), x, pca_components=16, seed=1)
    f16 = build_ivf(np.arange(N), x, pca_components=16, seed=1, storage="float16")
    assert f16.storage == "float16"
    assert _recall(f16, exact, queries, 16) >= 0.95
    assert _recall(f32, exact, queries, 16) >= 0.95
    # float16 scans PCA rows and re-ranks; against float32 laid out the same way, the
    # full vectors take half the bytes
    f32_pca = IVFIndex(f32.quantizer, scan="pca")
    f32_pca.add(np.arange(N), x)
    assert f16.nbytes < f32_pca.nbytes - N * DIM * 2 * 0.9
    ids, scores = f16.search(x[3], 1, 16)
    assert ids[0] == 3 and abs(scores[0] - 1.0) < 1e-3


def test_memory_stays_within_1_3_times_the_raw_vectors_for_384_dims() -> None:
    x = clustered(3_000, 384, centers=30)
    index = build_ivf(np.arange(3_000), x, pca_components=96, n_clusters=50)
    # per vector (the fixed-size quantizer aside, which is ~0.5% of the vectors at 1M)
    assert index.nbytes - index.quantizer.nbytes <= 1.3 * x.nbytes


def test_batched_search_answers_what_single_searches_answer(data) -> None:  # type: ignore[no-untyped-def]
    x, queries, _ = data
    index = build_ivf(np.arange(N), x, pca_components=16, seed=1)
    ids, scores = index.search_batch(queries, 10, 8)
    for q, row_ids, row_scores in zip(queries, ids, scores, strict=True):
        one_ids, one_scores = index.search(q, 10, 8)
        assert row_ids.tolist() == one_ids.tolist()
        assert np.allclose(row_scores, one_scores, atol=1e-5)


def test_removing_most_vectors_compacts_the_arena_and_keeps_answers_right(data) -> None:  # type: ignore[no-untyped-def]
    x, _, _ = data
    index = build_ivf(np.arange(N), x, pca_components=16, seed=1)
    before = index.nbytes
    gone = np.arange(0, N, 4)  # every fourth, then half of the rest
    index.remove(gone)
    index.remove(np.arange(1, N, 2))
    kept = np.setdiff1d(np.arange(N), np.concatenate([gone, np.arange(1, N, 2)]))
    assert len(index) == kept.shape[0] and index.nbytes < before
    for i in kept[:50]:
        assert index.search(x[i], 1, 64)[0][0] == i
    index.add(kept[:10], x[kept[10:20]])  # replaced after compaction: still one entry each
    assert len(index) == kept.shape[0]
    assert index.search(x[kept[10]], 2, 64)[0].tolist().count(kept[0]) == 1


class _FakeCursor:
    """Plays psycopg2's copy_expert: writes the stream in small, uneven pieces."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream

    def copy_expert(self, query: str, sink) -> None:  # type: ignore[no-untyped-def]
        for start in range(0, len(self.stream), 777):
            sink.write(self.stream[start:start + 777])


def test_binary_copy_rows_parse_into_ids_and_vectors() -> None:
    vectors = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    rows = np.empty(100, dtype=_id_vector_dtype(8))
    rows["n"], rows["l1"], rows["id"], rows["l2"], rows["v"] = 2, 8, np.arange(100) * 3, 32, vectors
    ids, parsed = copy_rows_out(_FakeCursor(_HEADER + rows.tobytes() + _TRAILER), "COPY", 8)
    assert ids.tolist() == (np.arange(100) * 3).tolist()
    assert np.array_equal(parsed, vectors)


def test_binary_copy_refuses_rows_of_another_size() -> None:
    rows = np.zeros(3, dtype=_id_vector_dtype(8))
    rows["n"], rows["l1"], rows["l2"] = 2, 8, 32
    with pytest.raises(ValueError):
        copy_rows_out(_FakeCursor(_HEADER + rows.tobytes() + b"\x00" + _TRAILER), "COPY", 8)
