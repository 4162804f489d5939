"""Storage of the IVF index: every full vector in one arena, sorted by cluster at a bulk load,
and per cluster its arena rows (plus, with `red_dim` > 0, its PCA-space rows).

With no PCA rows (`red_dim` 0, the full scan) a query scores each probed cluster's full
vectors in place: while a cluster's rows are the contiguous arena rows lo..hi its view says so.
With PCA rows it scans those (about a quarter of the bytes) and re-scores the best candidates
exactly on their full vectors, gathered from the arena by row number in one `take`.

Concurrency: mutations take a lock and publish a new immutable `IVFSnapshot` by reference; a
query reads the snapshot once and scans it without any lock. Arena rows are written once and
never overwritten while a snapshot can reference them (a removed row just becomes garbage until
`compact` copies the live rows into a fresh arena), and a removal copies its cluster's list.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from services.search.postings import IdArray, Matrix, by_list

Storage = Literal["float32", "float16"]
# (PCA-space rows, their arena rows, lo, hi): while lo >= 0 the list's full vectors are the
# contiguous arena rows lo..hi, so a scan reads them in place instead of gathering them
ListView = tuple[Matrix, IdArray, int, int]

# a list or the arena grows by this share of its size (and at least _MIN_GROW rows): the
# slack bounds memory at ~1/8 above the live vectors, the copies stay amortised O(1) per row
_GROW = 8
_MIN_GROW = 16
# compact the arena when removed (garbage) rows exceed this share of the live ones
_COMPACT_SHARE = 8


@dataclass(frozen=True)
class IVFSnapshot:
    """What one query sees: a view per cluster and the arena (full vectors and their ids)."""

    lists: tuple[ListView, ...]
    arena: NDArray[np.floating]
    ids: IdArray  # the image id of each arena row
    # (n_lists, 2) int64: each list's contiguous arena rows lo, hi, or -1, -1 while they are
    # not contiguous (the compiled scan's view of `lists`)
    bounds: IdArray


def _grown(n: int, need: int) -> int:
    return max(need, n + max(n // _GROW, _MIN_GROW))


class _Arena:
    """Full vectors, one row each (float32 or float16), appended and never overwritten."""

    def __init__(self, dim: int, storage: Storage, base: NDArray[np.floating] | None = None,
                 ids: IdArray | None = None) -> None:
        self.dtype = np.dtype(np.float16 if storage == "float16" else np.float32)
        if base is None:
            base = np.zeros((0, dim), dtype=self.dtype)
        self.rows = np.ascontiguousarray(base, dtype=self.dtype)  # may be the caller's matrix
        self.n = int(self.rows.shape[0])
        self.ids = np.zeros(self.n, dtype=np.int64) if ids is None else ids
        self.owner = np.full(self.n, -1, dtype=np.int32)  # row -> its cluster, -1 = garbage
        self.garbage = 0

    def append(self, vectors: Matrix, ids: IdArray, lists: IdArray) -> IdArray:
        need = self.n + vectors.shape[0]
        if need > self.rows.shape[0]:
            cap = _grown(self.rows.shape[0], need)
            self.rows = _regrow(self.rows, self.n, cap)
            self.ids = _regrow(self.ids, self.n, cap)
            self.owner = _regrow(self.owner, self.n, cap)
        where = np.arange(self.n, need, dtype=np.int64)
        self.rows[self.n:need] = vectors
        self.ids[self.n:need] = ids
        self.owner[self.n:need] = lists
        self.n = need
        return where

    def kill(self, rows: IdArray) -> None:
        self.owner[rows] = -1
        self.garbage += int(rows.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.ids.nbytes + self.owner.nbytes)


class _IdMap:
    """image id -> arena row: a sorted base (from the bulk build) plus a dict of later changes."""

    def __init__(self, ids: IdArray | None = None, rows: IdArray | None = None) -> None:
        if ids is None or rows is None:
            ids, rows = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.base_ids = np.ascontiguousarray(ids[order])
        self.base_rows = np.ascontiguousarray(rows[order])
        self.delta: dict[int, int] = {}
        self.size = int(self.base_ids.shape[0])

    def _base_pos(self, ids: IdArray) -> tuple[IdArray, NDArray[np.bool_]]:
        if not self.base_ids.shape[0]:
            return np.zeros(ids.shape[0], dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
        pos = np.minimum(np.searchsorted(self.base_ids, ids), self.base_ids.shape[0] - 1)
        return pos, (self.base_ids[pos] == ids) & (self.base_rows[pos] >= 0)

    def lookup(self, ids: IdArray) -> IdArray:
        """The arena row of each id, -1 where absent."""
        pos, found = self._base_pos(ids)
        rows = np.where(found, self.base_rows[pos], -1) if self.base_ids.shape[0] else \
            np.full(ids.shape[0], -1, dtype=np.int64)
        if self.delta:
            get = self.delta.get
            for j, i in enumerate(ids.tolist()):
                row = get(i)
                if row is not None:
                    rows[j] = row
        return rows

    def put(self, ids: IdArray, rows: IdArray) -> None:
        """Point each id (unique in the batch) at its new row; ids already present move."""
        pos, found = self._base_pos(ids)
        self.base_rows[pos[found]] = -1
        added = 0
        for i, row in zip(ids.tolist(), rows.tolist(), strict=True):
            if i not in self.delta:
                added += 1
            self.delta[i] = row
        self.size += added - int(found.sum())

    def drop(self, ids: IdArray) -> None:
        """Forget ids (each present, unique in the batch)."""
        pos, found = self._base_pos(ids)
        self.base_rows[pos[found]] = -1
        for i in ids.tolist():
            self.delta.pop(i, None)
        self.size -= int(ids.shape[0])

    def remap(self, new_row_of: IdArray) -> None:
        live = self.base_rows >= 0
        self.base_rows[live] = new_row_of[self.base_rows[live]]
        self.delta = {i: int(new_row_of[r]) for i, r in self.delta.items()}

    @property
    def nbytes(self) -> int:
        # a dict entry with its two int objects is about 100 bytes
        return int(self.base_ids.nbytes + self.base_rows.nbytes + 100 * len(self.delta))


class _List:
    """One cluster: PCA-space rows and arena rows; rows below `n` are never written again."""

    __slots__ = ("red", "rows", "n", "lo")

    def __init__(self, red: Matrix, rows: IdArray, lo: int = -1) -> None:
        self.red, self.rows, self.n = red, rows, int(rows.shape[0])
        self.lo = lo  # first arena row while the rows are exactly lo..lo+n, else -1

    def view(self) -> ListView:
        return self.red[: self.n], self.rows[: self.n], self.lo, self.lo + self.n

    def append(self, red: Matrix, rows: IdArray) -> None:
        need = self.n + rows.shape[0]
        if need > self.rows.shape[0]:
            # grow into fresh buffers; snapshots keep the old ones
            cap = _grown(self.rows.shape[0], need)
            self.red = _regrow(self.red, self.n, cap)
            self.rows = _regrow(self.rows, self.n, cap)
        self.red[self.n:need] = red
        self.rows[self.n:need] = rows
        self.n, self.lo = need, -1

    def discard(self, drop_rows: IdArray) -> None:
        # copy-on-write: a snapshot may be scanning the current rows
        keep = np.flatnonzero(~np.isin(self.rows[: self.n], drop_rows))
        self.red, self.rows, self.n = self.red[keep], self.rows[keep], int(keep.shape[0])
        self.lo = -1

    @property
    def nbytes(self) -> int:
        return int(self.red.nbytes + self.rows.nbytes)


def _regrow(a: NDArray[np.generic], n: int, cap: int) -> NDArray[np.generic]:
    grown = np.empty((cap, *a.shape[1:]), dtype=a.dtype)
    grown[:n] = a[:n]
    return grown


class IVFLists:
    """K cluster lists over one arena of full vectors; every id is in at most one list."""

    def __init__(self, dim: int, red_dim: int, n_lists: int, storage: Storage = "float32"
                 ) -> None:
        self.dim, self.red_dim, self.storage = dim, red_dim, storage
        self._lock = threading.Lock()
        self._arena = _Arena(dim, storage)
        self._map = _IdMap()
        empty_red = np.zeros((0, red_dim), dtype=np.float32)
        empty_rows = np.zeros(0, dtype=np.int64)
        self._lists = [_List(empty_red, empty_rows) for _ in range(n_lists)]
        self._views = [pl.view() for pl in self._lists]
        self._bounds = np.full((len(self._lists), 2), -1, dtype=np.int64)
        self._snapshot = self._snap()

    def __len__(self) -> int:
        return self._map.size

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, int | np.integer):
            return False
        with self._lock:
            return bool(self._map.lookup(np.array([image_id], dtype=np.int64))[0] >= 0)

    def snapshot(self) -> IVFSnapshot:
        return self._snapshot

    def bulk_load(self, ids: IdArray, full: Matrix, red: Matrix, lists: IdArray) -> None:
        """Fill an empty index in one go, the arena sorted by cluster."""
        with self._lock:
            if self._map.size:
                raise ValueError("bulk_load needs an empty index")
            order = np.argsort(lists, kind="stable")
            self._arena = _Arena(self.dim, self.storage, full[order], ids[order])
            self._arena.owner[:] = lists[order]
            rows = np.arange(ids.shape[0], dtype=np.int64)
            self._map = _IdMap(ids[order], rows)
            red_sorted = red[order]
            bounds = np.searchsorted(lists[order], np.arange(len(self._lists) + 1))
            for c in range(len(self._lists)):
                lo, hi = int(bounds[c]), int(bounds[c + 1])
                # each cluster's rows are a contiguous slice of the sorted blocks
                self._lists[c] = _List(red_sorted[lo:hi], rows[lo:hi], lo)
            self._publish(set(range(len(self._lists))))

    def upsert(self, ids: IdArray, full: Matrix, red: Matrix, lists: IdArray) -> None:
        """Put each id (unique in the batch) in its list, replacing it wherever it was."""
        with self._lock:
            touched = self._discard(self._map.lookup(ids))
            rows = self._arena.append(full, ids, lists)
            self._map.put(ids, rows)
            for target, sel in by_list(lists):
                self._lists[target].append(red[sel], rows[sel])
                touched.add(target)
            self._publish(touched)

    def remove(self, ids: IdArray) -> int:
        with self._lock:
            ids = np.unique(ids)
            rows = self._map.lookup(ids)
            present = rows >= 0
            touched = self._discard(rows[present])
            self._map.drop(ids[present])
            self._publish(touched)
            return int(present.sum())

    def lists_of(self, ids: IdArray) -> IdArray:
        with self._lock:
            rows = self._map.lookup(ids)
            out = np.full(ids.shape[0], -1, dtype=np.int64)
            found = rows >= 0
            out[found] = self._arena.owner[rows[found]]
            return out

    def list_sizes(self) -> NDArray[np.int64]:
        return np.array([v[1].shape[0] for v in self._snapshot.lists], dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held: arena, lists and id map (what the index costs in memory)."""
        with self._lock:
            lists = sum(pl.nbytes for pl in self._lists)
            return self._arena.nbytes + lists + self._map.nbytes

    def _discard(self, rows: IdArray) -> set[int]:
        """Take the rows (-1 = absent, skipped) out of their lists and the arena."""
        present = rows >= 0
        if not present.any():
            return set()
        rows = rows[present]
        owners = self._arena.owner[rows]
        self._arena.kill(rows)
        touched: set[int] = set()
        for c in np.unique(owners).tolist():
            self._lists[c].discard(rows[owners == c])
            touched.add(c)
        return touched

    def _publish(self, touched: set[int]) -> None:
        arena = self._arena
        if arena.garbage * _COMPACT_SHARE > max(self._map.size, 1) and arena.garbage > 1024:
            self._compact()
            touched = set(range(len(self._lists)))
        for t in touched:
            view = self._views[t] = self._lists[t].view()
            self._bounds[t] = view[2:] if view[2] >= 0 else (-1, -1)
        self._snapshot = self._snap()  # one reference swap: readers see all or nothing

    def _snap(self) -> IVFSnapshot:
        arena = self._arena
        return IVFSnapshot(tuple(self._views), arena.rows[: arena.n], arena.ids[: arena.n],
                           self._bounds.copy())

    def _compact(self) -> None:
        """Copy the live rows, cluster by cluster, into a fresh arena (each list contiguous
        again); old snapshots keep the old one."""
        old = self._arena
        live = np.concatenate([pl.rows[: pl.n] for pl in self._lists]) if self._lists else \
            np.zeros(0, dtype=np.int64)
        new_row_of = np.full(old.n, -1, dtype=np.int64)
        new_row_of[live] = np.arange(live.shape[0])
        arena = _Arena(self.dim, self.storage, old.rows[live], old.ids[live])
        arena.owner[:] = old.owner[live]
        lo = 0
        for pl in self._lists:
            # both buffers end at n, so the next append regrows them together
            pl.rows, pl.red, pl.lo = new_row_of[pl.rows[: pl.n]], pl.red[: pl.n], lo
            lo += pl.n
        self._map.remap(new_row_of)
        self._arena = arena
