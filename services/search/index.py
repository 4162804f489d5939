"""The in-memory vector indexes: exact (brute force) and PCA + K-means inverted file (IVF).

Pure numpy / scikit-learn, no database and no web. Vectors are stored L2-normalised, so cosine
similarity is a dot product: one row-wise dot product call per scanned posting list, top-k by a
threshold and a sort of the few contenders.
Queries never take a lock (see `postings`); an index can be built off to the side and swapped in
by reference.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from services.search.ivf_lists import IVFLists, IVFSnapshot, Storage
from services.search.kernel import native
from services.search.postings import (
    IdArray,
    Matrix,
    PostingLists,
    as_ids,
    smallest,
    top_k,
    unit_rows,
)
from services.search.quantizer import Quantizer, default_n_clusters, fit_quantizer

__all__ = ["DEFAULT_NPROBE", "DEFAULT_RERANK", "ExactIndex", "IVFIndex", "IdArray", "Matrix",
           "Quantizer", "Scan", "Storage", "VectorIndex", "build_ivf", "default_n_clusters",
           "fit_quantizer"]

DEFAULT_NPROBE = 8
DEFAULT_RERANK = 100
# an empty index filled with more vectors than this is bulk-loaded (clusters sorted in one go)
_BULK_ABOVE = 1_000
# at least 1/_RERANK_SHARE of a query's candidates are re-scored on the full vectors
_RERANK_SHARE = 32
# queries per block of a batched search (bounds the candidate buffers)
_BATCH_BLOCK = 64
# vectors reduced to PCA rows at a time when filling a `scan="pca"` index (bounds temporaries)
_REDUCE_CHUNK = 65_536

Scan = Literal["full", "pca"]


class VectorIndex(Protocol):
    """What the search service needs from an index, exact or IVF."""

    @property
    def exact(self) -> bool: ...

    @property
    def dim(self) -> int: ...

    @property
    def n_clusters(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, image_id: object) -> bool: ...

    def assign(self, vectors: ArrayLike) -> IdArray: ...

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray: ...

    def remove(self, ids: ArrayLike) -> int: ...

    def lists_of(self, ids: ArrayLike) -> IdArray: ...

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]: ...

    def search_batch(self, vectors: ArrayLike, k: int, nprobe: int | None = None
                     ) -> tuple[IdArray, NDArray[np.float32]]: ...

    def list_sizes(self) -> NDArray[np.int64]: ...

    @property
    def nbytes(self) -> int: ...


class ExactIndex:
    """Brute-force cosine search over one contiguous matrix: exact, for small collections."""

    exact = True
    n_clusters = 0

    def __init__(self, dim: int) -> None:
        self._lists = PostingLists(dim, 1)

    @property
    def dim(self) -> int:
        return self._lists.dim

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._lists

    def assign(self, vectors: ArrayLike) -> IdArray:
        return np.zeros(unit_rows(vectors, self.dim).shape[0], dtype=np.int64)

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray:
        """Add or replace vectors; `lists` is accepted for symmetry and ignored."""
        id_arr, mat = as_ids(ids), unit_rows(vectors, self.dim)
        if id_arr.shape[0] != mat.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {mat.shape[0]} vectors")
        zeros = np.zeros(id_arr.shape[0], dtype=np.int64)
        self._lists.upsert(id_arr, mat, zeros)
        return zeros

    def remove(self, ids: ArrayLike) -> int:
        return self._lists.remove(as_ids(ids))

    def lists_of(self, ids: ArrayLike) -> IdArray:
        return self._lists.lists_of(as_ids(ids))

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]:
        """The k nearest by cosine; `nprobe` is ignored (everything is scanned)."""
        q = unit_rows(vector, self.dim)[0]
        ((vectors, ids),) = self._lists.snapshot()
        return top_k(vectors @ q, ids, k)

    def search_batch(self, vectors: ArrayLike, k: int, nprobe: int | None = None
                     ) -> tuple[IdArray, NDArray[np.float32]]:
        """`search` for many queries: (n, k) ids (-1 pads) and scores (-inf pads)."""
        q = unit_rows(vectors, self.dim)
        ((matrix, ids),) = self._lists.snapshot()
        out_ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        out_scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        for start in range(0, q.shape[0], _BATCH_BLOCK):
            scores = q[start:start + _BATCH_BLOCK] @ matrix.T
            for j, row in enumerate(scores):
                found, best = top_k(row, ids, k)
                out_ids[start + j, : found.shape[0]] = found
                out_scores[start + j, : found.shape[0]] = best
        return out_ids, out_scores

    def list_sizes(self) -> NDArray[np.int64]:
        return np.array([len(self)], dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return self._lists.nbytes


class IVFIndex:
    """Inverted file over a fitted `Quantizer`: one posting list per K-means centroid.

    Two ways to scan the `nprobe` nearest lists:

    - `scan="full"` (the default for float32 storage): each list's full vectors, a contiguous
      slice of the cluster-sorted arena, are scored exactly (one row-wise `vecdot` per list); no
      PCA rows are kept, so the index holds little more than the raw vectors.
    - `scan="pca"` (the default for float16 storage): each list's PCA-space rows are scored,
      and the best `rerank` candidates (at least k) are re-scored on their full vectors: float16
      vectors are only converted for the few candidates re-scored.
    """

    exact = False

    def __init__(self, quantizer: Quantizer, *, storage: Storage = "float32",
                 rerank: int = DEFAULT_RERANK, scan: Scan | None = None) -> None:
        self.quantizer = quantizer
        self.rerank = rerank
        self.scan: Scan = scan or ("full" if storage == "float32" else "pca")
        if self.scan not in ("full", "pca"):
            raise ValueError(f"unknown scan {self.scan!r}: 'full' or 'pca'")
        red_dim = quantizer.pca_dim + 1 if self.scan == "pca" else 0
        self._lists = IVFLists(quantizer.dim, red_dim, quantizer.n_clusters, storage)

    @property
    def dim(self) -> int:
        return self.quantizer.dim

    @property
    def n_clusters(self) -> int:
        return self.quantizer.n_clusters

    @property
    def storage(self) -> Storage:
        return self._lists.storage

    @property
    def nbytes(self) -> int:
        return self._lists.nbytes + self.quantizer.nbytes

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._lists

    def assign(self, vectors: ArrayLike) -> IdArray:
        """The list (cluster) each vector would join."""
        return self.quantizer.assign(unit_rows(vectors, self.dim))

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray:
        """Add or replace vectors in the given lists (default: nearest centroid); the lists."""
        id_arr, mat = as_ids(ids), unit_rows(vectors, self.dim)
        if id_arr.shape[0] != mat.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {mat.shape[0]} vectors")
        if lists is None:
            where = self.quantizer.assign(mat)
        else:
            where = as_ids(lists)
            if where.shape[0] != id_arr.shape[0]:
                raise ValueError("one list per vector is needed")
            if where.size and (where.min() < 0 or where.max() >= self.n_clusters):
                raise ValueError(f"list ids must be in [0, {self.n_clusters})")
        keep = _last_wins(id_arr)
        if keep is not None:
            id_arr, mat, where = id_arr[keep], mat[keep], where[keep]
        red = self._reduced(mat)
        if len(self._lists) == 0 and id_arr.shape[0] > _BULK_ABOVE:
            self._lists.bulk_load(id_arr, mat, red, where)
        else:
            self._lists.upsert(id_arr, mat, red, where)
        return where

    def _reduced(self, mat: Matrix) -> Matrix:
        """The rows the scan scores besides the full vectors: PCA rows, or none (n, 0)."""
        if self.scan == "full":
            return np.empty((mat.shape[0], 0), dtype=np.float32)
        out = np.empty((mat.shape[0], self.quantizer.pca_dim + 1), dtype=np.float32)
        for start in range(0, mat.shape[0], _REDUCE_CHUNK):
            chunk = mat[start:start + _REDUCE_CHUNK]
            out[start:start + chunk.shape[0]] = self.quantizer.reduce(chunk)
        return out

    def remove(self, ids: ArrayLike) -> int:
        return self._lists.remove(as_ids(ids))

    def lists_of(self, ids: ArrayLike) -> IdArray:
        """The list each id is in, -1 where it is absent."""
        return self._lists.lists_of(as_ids(ids))

    def list_sizes(self) -> NDArray[np.int64]:
        return self._lists.list_sizes()

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]:
        """The k best by cosine among the members of the `nprobe` nearest clusters."""
        # the hot path: every numpy call here costs about a microsecond, so there are few
        q = _unit_query(vector, self.dim)
        probes = self.quantizer.probe_fast(q, nprobe or DEFAULT_NPROBE)
        snap = self._lists.snapshot()
        if self.scan == "full":
            return _scan_full(snap, q, probes, k)
        return self._scan(snap, q, self.quantizer.query_row(q), probes, k)

    def search_batch(self, vectors: ArrayLike, k: int, nprobe: int | None = None
                     ) -> tuple[IdArray, NDArray[np.float32]]:
        """`search` for many queries at once: (n, k) ids (-1 pads) and scores (-inf pads).

        The probes (full-space distances to every centroid) and the PCA-space query rows are
        two matrix products for the whole batch; the scan per query is `search`'s.
        """
        q = unit_rows(vectors, self.dim)
        out_ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        out_scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        nprobe = max(1, min(nprobe or DEFAULT_NPROBE, self.n_clusters))
        snap = self._lists.snapshot()
        with threadpool_limits(1, user_api="blas"):  # many small products: threads only wait
            self._batch_into(snap, q, k, nprobe, out_ids, out_scores)
        return out_ids, out_scores

    def _batch_into(self, snap: IVFSnapshot, q: Matrix, k: int, nprobe: int,
                    out_ids: IdArray, out_scores: NDArray[np.float32]) -> None:
        for start in range(0, q.shape[0], _BATCH_BLOCK):
            block = q[start:start + _BATCH_BLOCK]
            probes = self.quantizer.probe_many(block, nprobe)
            if self.scan == "full":
                found = [_scan_full(snap, block[j], probes[j], k) for j in range(block.shape[0])]
            else:
                rows_q = self.quantizer.reduce(block)
                rows_q[:, -1] = 1.0
                found = [self._scan(snap, block[j], rows_q[j], probes[j], k)
                         for j in range(block.shape[0])]
            for j, (ids, scores) in enumerate(found):
                out_ids[start + j, : ids.shape[0]] = ids
                out_scores[start + j, : ids.shape[0]] = scores

    def _scan(self, snap: IVFSnapshot, q: Matrix, row: Matrix, probes: IdArray, k: int
              ) -> tuple[IdArray, NDArray[np.float32]]:
        """`scan="pca"`: score the probed lists in PCA space, re-score the best exactly."""
        views = [v for v in map(snap.lists.__getitem__, probes.tolist()) if v[1].shape[0]]
        if not views:
            return _no_hits()
        rows = views[0][1] if len(views) == 1 else np.concatenate([v[1] for v in views])
        n = rows.shape[0]
        # the PCA scores' error grows with the candidates they rank: re-score a share of them
        r = max(self.rerank, k, n // _RERANK_SHARE)
        if n > r:  # PCA-space scores pick the candidates the full vectors re-score
            neg = -row  # smallest of -z.row = best
            approx = np.empty(n, dtype=np.float32)
            end = 0
            for red, *_ in views:
                start, end = end, end + red.shape[0]
                _rowdot(red, neg, out=approx[start:end])
            rows = np.sort(rows.take(smallest(approx, r)))  # ascending: friendlier to caches
        full = snap.arena.take(rows, axis=0)
        if full.dtype != np.float32:
            full = full.astype(np.float32)
        return top_k(full @ q, snap.ids.take(rows), k)


def _scan_full(snap: IVFSnapshot, q: Matrix, probes: IdArray, k: int
               ) -> tuple[IdArray, NDArray[np.float32]]:
    """`scan="full"`: score the probed lists' full vectors exactly, keep the k best.

    A list still contiguous in the arena (all of them after a load or a compaction) is a view,
    scored in place; one changed since is gathered by its row numbers. With the compiled
    kernel (`kernel.native`), a query whose probed lists are all contiguous is one C call.
    """
    views, arena, arena_ids = snap.lists, snap.arena, snap.ids
    if native is not None and arena.dtype == np.float32 and k > 0:
        out_ids, out_scores = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.float32)
        found = native.scan(arena, arena_ids, snap.bounds, probes, q, out_ids, out_scores)
        if found >= 0:  # -1: a probed list is not contiguous; numpy gathers it below
            return out_ids[:found], out_scores[:found]
    parts = [v for v in map(views.__getitem__, probes.tolist()) if v[1].shape[0]]
    if not parts:
        return _no_hits()
    if len(parts) == 1:
        _, rows, lo, hi = parts[0]
        if lo >= 0:
            return top_k(_rowdot(_as_f32(arena[lo:hi]), q), arena_ids[lo:hi], k)
    total = sum(v[1].shape[0] for v in parts)
    scores = np.empty(total, dtype=np.float32)
    ids = []
    end = 0
    for _, rows, lo, hi in parts:
        start, end = end, end + rows.shape[0]
        if lo >= 0:
            block, block_ids = arena[lo:hi], arena_ids[lo:hi]
        else:
            block, block_ids = arena.take(rows, axis=0), arena_ids.take(rows)
        _rowdot(_as_f32(block), q, out=scores[start:end])
        ids.append(block_ids)
    return top_k(scores, np.concatenate(ids), k)


def _dot_rows(m: Matrix, v: Matrix, out: Matrix | None = None) -> Matrix:
    return np.dot(m, v, out=out)


# Row-by-row dot products of a block with a vector. numpy 2's vecdot streams the rows in order
# with SIMD, about twice as fast as BLAS sgemv on blocks that are not in the cache (a probed
# list mostly is not): 17 us against 33 us for 250 x 384 floats.
_rowdot = getattr(np, "vecdot", _dot_rows)


def _as_f32(block: NDArray[np.floating]) -> Matrix:
    return block if block.dtype == np.float32 else block.astype(np.float32)


def _unit_query(vector: ArrayLike, dim: int) -> Matrix:
    """One query as a unit float32 vector (fast path for what the service passes in)."""
    if not (isinstance(vector, np.ndarray) and vector.dtype == np.float32 and vector.ndim == 1
            and vector.shape[0] == dim):
        return unit_rows(vector, dim)[0]
    norm = math.sqrt(float(vector @ vector))
    return vector / max(norm, 1e-12)


def _no_hits() -> tuple[IdArray, NDArray[np.float32]]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


def _last_wins(ids: IdArray) -> IdArray | None:
    """Positions to keep so each id of a batch appears once, its last vector winning."""
    if np.unique(ids).shape[0] == ids.shape[0]:
        return None
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    return np.sort(ids.shape[0] - 1 - first_from_end)


def build_ivf(ids: ArrayLike, vectors: ArrayLike, *, n_clusters: int | None = None,
              pca_components: int = 96, seed: int = 0, storage: Storage = "float32",
              rerank: int = DEFAULT_RERANK, scan: Scan | None = None) -> IVFIndex:
    """Fit a quantizer on the vectors and file every vector under its nearest centroid."""
    mat = np.asarray(vectors, dtype=np.float32)
    mat = unit_rows(mat, mat.shape[-1])  # a fresh copy: it becomes the index's arena
    index = IVFIndex(fit_quantizer(mat, n_clusters=n_clusters, pca_components=pca_components,
                                   seed=seed), storage=storage, rerank=rerank, scan=scan)
    index.add(ids, mat)
    return index
