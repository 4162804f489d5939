"""Posting lists: contiguous float32 matrices of unit vectors plus their int64 ids.

Concurrency: mutations take a lock and publish a new immutable snapshot (a tuple of per-list
views) by reference; a query reads the snapshot once and scans it without any lock. A list only
ever appends past the rows a snapshot can see, and a removal copies the list, so a snapshot
never changes under a reader.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

IdArray = NDArray[np.int64]
Matrix = NDArray[np.float32]
ListView = tuple[Matrix, IdArray]

# top_k samples a threshold from this many candidates up
_SAMPLE_TOP_ABOVE = 1_024


def unit_rows(vectors: ArrayLike, dim: int) -> Matrix:
    """A C-contiguous float32 (n, dim) matrix of L2-normalised rows."""
    m = np.asarray(vectors, dtype=np.float32)
    if m.ndim == 1:
        m = m.reshape(1, -1)
    if m.ndim != 2 or m.shape[1] != dim:
        raise ValueError(f"expected vectors of {dim} dims, got shape {m.shape}")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.ascontiguousarray(m / np.maximum(norms, 1e-12), dtype=np.float32)


def as_ids(ids: ArrayLike) -> IdArray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())


def smallest(values: NDArray[np.float32], m: int) -> IdArray:
    """Positions of the m smallest values, in no order (ties at the edge: any of them).

    np.argpartition costs ~12 ns per element; a threshold taken from a strided sample, one
    vectorised comparison and an argpartition of the few survivors cost a fraction of that.
    """
    n = values.shape[0]
    if m >= n:
        return np.arange(n)
    if n < 512 or m * 16 > n:
        return np.argpartition(values, m - 1)[:m]
    keep = about_smallest(values, m + 8, m)
    return keep.take(np.argpartition(values.take(keep), m - 1)[:m])


def about_smallest(values: NDArray[np.float32], m: int, at_least: int) -> IdArray:
    """Positions of about the m smallest values (every value up to a threshold taken from a
    strided sample: on average m to m + 8 of them, never fewer than `at_least`), in position
    order. A sort of an eighth of them and one comparison, a fraction of what an exact
    selection costs: for a short list that a second, exact stage narrows down."""
    n = values.shape[0]
    if m >= n or at_least >= n:
        return np.arange(n)
    if n < 512 or m * 16 > n:
        return np.sort(np.argpartition(values, max(m, at_least) - 1)[: max(m, at_least)])
    keep = (values <= np.sort(values[::8])[m // 8]).nonzero()[0]
    if keep.shape[0] < at_least:  # an unlucky sample: fall back to the exact selection
        return np.sort(np.argpartition(values, at_least - 1)[:at_least])
    return keep


def by_list(lists: IdArray) -> Iterator[tuple[int, IdArray]]:
    """(list, positions of the rows that go to it) for every list `lists` names, in order."""
    order = np.argsort(lists, kind="stable")
    bounds = np.flatnonzero(np.diff(lists[order])) + 1
    for sel in np.split(order, bounds):
        if sel.size:
            yield int(lists[sel[0]]), sel


def top_k(scores: NDArray[np.float32], ids: IdArray, k: int
          ) -> tuple[IdArray, NDArray[np.float32]]:
    """The k best (id, score) pairs, best first; ties broken by id so results are stable.

    Every score tied with the k-th best competes, so the answer does not depend on the order
    of the candidates. Above `_SAMPLE_TOP_ABOVE` candidates the few contenders are found by a
    threshold from a strided sample (np.argpartition is ~10 ns per element).
    """
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if k >= n:
        cand = np.arange(n)
    else:
        cand = None
        if n >= _SAMPLE_TOP_ABOVE and k * 32 <= n:
            sample = np.sort(scores[::16])
            cand = (scores >= sample[-(k // 16 + 3)]).nonzero()[0]
            if cand.shape[0] < k:  # an unlucky sample
                cand = None
        if cand is None:
            cand = (scores >= np.sort(scores)[n - k]).nonzero()[0]
            if cand.shape[0] < k:  # NaN scores compare false
                cand = np.argpartition(scores, n - k)[n - k:]
    best, cand_ids = scores.take(cand), ids.take(cand)
    order = np.lexsort((cand_ids, -best))[:k]
    return cand_ids.take(order), best.take(order).astype(np.float32, copy=False)


class _PostingList:
    """One contiguous float32 matrix and its ids; rows below `n` are never written again."""

    __slots__ = ("_vectors", "_ids", "_n")

    def __init__(self, dim: int) -> None:
        self._vectors: Matrix = np.zeros((0, dim), dtype=np.float32)
        self._ids: IdArray = np.zeros(0, dtype=np.int64)
        self._n = 0

    def view(self) -> ListView:
        return self._vectors[: self._n], self._ids[: self._n]

    def append(self, ids: IdArray, vectors: Matrix) -> None:
        need = self._n + ids.shape[0]
        if need > self._ids.shape[0]:
            # grow by an eighth into fresh buffers (old snapshots keep the old ones): amortised
            # O(1) copies per row for at most 1/8 of slack memory
            cap = max(need, self._ids.shape[0] + max(self._ids.shape[0] // 8, 16))
            grown_v = np.empty((cap, self._vectors.shape[1]), dtype=np.float32)
            grown_i = np.empty(cap, dtype=np.int64)
            grown_v[: self._n] = self._vectors[: self._n]
            grown_i[: self._n] = self._ids[: self._n]
            self._vectors, self._ids = grown_v, grown_i
        self._vectors[self._n:need] = vectors
        self._ids[self._n:need] = ids
        self._n = need

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes + self._ids.nbytes)

    def discard(self, drop: IdArray) -> None:
        # copy-on-write into buffers of the same capacity: a snapshot may be scanning the
        # current rows, and a replaced id is usually appended again right after
        keep = np.flatnonzero(~np.isin(self._ids[: self._n], drop))
        vectors = np.empty_like(self._vectors)
        ids = np.empty_like(self._ids)
        np.take(self._vectors, keep, axis=0, out=vectors[: keep.shape[0]])
        np.take(self._ids, keep, out=ids[: keep.shape[0]])
        self._vectors, self._ids, self._n = vectors, ids, int(keep.shape[0])


class PostingLists:
    """K posting lists plus where each id lives; every id is in at most one list."""

    def __init__(self, dim: int, n_lists: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._lists = [_PostingList(dim) for _ in range(n_lists)]
        self._where: dict[int, int] = {}
        self._views = [pl.view() for pl in self._lists]
        self._snapshot: tuple[ListView, ...] = tuple(self._views)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(int(pl.nbytes) for pl in self._lists) + 100 * len(self._where)

    def snapshot(self) -> tuple[ListView, ...]:
        """The current, immutable state: one (vectors, ids) view per list."""
        return self._snapshot

    def lists_of(self, ids: IdArray) -> IdArray:
        where = self._where
        return np.fromiter((where.get(i, -1) for i in ids.tolist()), dtype=np.int64,
                           count=ids.shape[0])

    def upsert(self, ids: IdArray, vectors: Matrix, lists: IdArray) -> None:
        """Put each id in its list; an id already present anywhere is replaced, not duplicated."""
        ids, vectors, lists = _last_wins(ids, vectors, lists)
        with self._lock:
            touched = self._discard(ids)
            for target, sel in by_list(lists):
                self._lists[target].append(ids[sel], vectors[sel])
                touched.add(target)
            self._where.update(zip(ids.tolist(), lists.tolist(), strict=True))
            self._publish(touched)

    def remove(self, ids: IdArray) -> int:
        with self._lock:
            present = [i for i in dict.fromkeys(ids.tolist()) if i in self._where]
            touched = self._discard(np.asarray(present, dtype=np.int64))
            for i in present:
                del self._where[i]
            self._publish(touched)
            return len(present)

    def _discard(self, ids: IdArray) -> set[int]:
        """Take ids out of their lists (not out of `_where`); the lists touched."""
        by_list: dict[int, list[int]] = {}
        for i in ids.tolist():
            where = self._where.get(i)
            if where is not None:
                by_list.setdefault(where, []).append(i)
        for where, drop in by_list.items():
            self._lists[where].discard(np.asarray(drop, dtype=np.int64))
        return set(by_list)

    def _publish(self, touched: set[int]) -> None:
        for t in touched:
            self._views[t] = self._lists[t].view()
        self._snapshot = tuple(self._views)  # one reference swap: readers see all or nothing


def _last_wins(ids: IdArray, vectors: Matrix, lists: IdArray
               ) -> tuple[IdArray, Matrix, IdArray]:
    """Drop earlier repeats of an id within one batch (the last vector is the current one)."""
    if np.unique(ids).shape[0] == ids.shape[0]:
        return ids, vectors, lists
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    keep = np.sort(ids.shape[0] - 1 - first_from_end)
    return ids[keep], vectors[keep], lists[keep]
