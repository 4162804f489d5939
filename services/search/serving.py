"""What queries see, and how it is made: the serving index of one version, built from what the
database holds (restored, or fitted anew), with the changes made meanwhile replayed onto it.

`IndexService` (service.py) decides when; these functions do the building. With several shards
a replica keeps only the vectors it owns (`Shards`), while every version is fitted on all.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from services.search.index import (
    ExactIndex,
    IdArray,
    IVFIndex,
    Matrix,
    VectorIndex,
    fit_quantizer,
    unit_rows,
)
from services.search.quantizer import Quantizer
from services.search.store import IndexStore, StoredVectors, StoredVersion
from shared.config import IndexSettings
from shared.schemas import RebuildResponse

log = logging.getLogger(__name__)

# K-means on fewer vectors than this is meaningless: such collections stay exact
MIN_IVF_VECTORS = 16


@dataclass(frozen=True)
class Serving:
    """What queries see: an index and the version it came from, swapped as one reference."""

    index: VectorIndex | None  # None until the dimension is known (nothing stored yet)
    version_id: int | None
    built_from: int = 0  # vectors the version was fitted on (all shards)
    built_at: datetime | None = None

    @property
    def size(self) -> int:
        return len(self.index) if self.index is not None else 0

    def rebuilt(self) -> RebuildResponse:
        """How a rebuild that produced this reports it."""
        index = self.index
        return RebuildResponse(index_version=self.version_id, n_vectors=self.size,
                               n_clusters=index.n_clusters if index is not None else 0,
                               exact=index is None or index.exact)


@dataclass(frozen=True)
class Change:
    """An add or remove made while a replacement index was being built, to replay onto it."""

    op: Literal["add", "remove"]
    ids: IdArray
    vectors: Matrix | None = None


@dataclass(frozen=True)
class Shards:
    """Which vectors this replica keeps: those of clusters c % n == shard_id (exact mode: of
    image ids i % n == shard_id); all of them with one shard."""

    shard_id: int = 0
    n_shards: int = 1

    def owned(self, keys: IdArray) -> NDArray[np.bool_] | None:
        """Which keys (cluster ids, or image ids in exact mode) are this shard's; None = all."""
        if self.n_shards == 1:
            return None
        return keys % self.n_shards == self.shard_id


def add_owned(index: VectorIndex, ids: IdArray, vectors: Matrix, lists: IdArray | None,
              owned: NDArray[np.bool_] | None) -> None:
    """Add the owned vectors (all when `owned` is None); drop the others if present."""
    if owned is None:
        index.add(ids, vectors, lists)
        return
    if owned.any():
        index.add(ids[owned], vectors[owned], None if lists is None else lists[owned])
    if not owned.all():
        index.remove(ids[~owned])  # an id replaced by a vector of another shard's cluster


def last_wins(ids: IdArray) -> IdArray:
    """Positions keeping one entry per id, the last of a batch winning (as the index does)."""
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    return np.sort(ids.shape[0] - 1 - first_from_end)


# ---- building a serving index --------------------------------------------------------------


class Builder:
    """Makes serving indexes of one replica from what its store holds."""

    def __init__(self, store: IndexStore, cfg: IndexSettings, shards: Shards) -> None:
        self.store, self.cfg, self.shards = store, cfg, shards

    def exact_enough(self, n_vectors: int) -> bool:
        return n_vectors < max(self.cfg.exact_below, MIN_IVF_VECTORS)

    def restore(self, stored: StoredVectors, dim: int | None) -> Serving:
        """The serving index from what the database holds, without fitting anything
        (`dim`: the current index's, for when nothing is stored)."""
        version = self.store.load_active_version()
        n = stored.ids.shape[0]
        if version is not None and n and version.quantizer.dim != stored.dim:
            log.warning("index version %d has %d dims but stored vectors have %s: serving exact",
                        version.id, version.quantizer.dim, stored.dim)
            version = None
        if version is None or self.exact_enough(n):
            return self.exact(stored, dim)
        index = self._ivf(version.quantizer)
        lists = lists_for(index, stored, version)
        add_owned(index, stored.ids, stored.vectors, lists, self.shards.owned(lists))
        return Serving(index, version.id, version.n_vectors, version.created_at)

    def fit(self, stored: StoredVectors, as_of: datetime, dim: int | None) -> Serving:
        """A freshly fitted, persisted (not yet active) version, or exact for small sets."""
        n = stored.ids.shape[0]
        if stored.dim is None or self.exact_enough(n):
            return self.exact(stored, dim)
        version_id = self.store.begin_version(dim=stored.dim, n_vectors=n)
        try:
            vectors = unit_rows(stored.vectors, stored.dim)
            quantizer = fit_quantizer(vectors, n_clusters=self.cfg.n_clusters,
                                      pca_components=self.cfg.pca_components, seed=self.cfg.seed)
            lists = quantizer.assign(vectors)
            self.store.save_version(version_id, quantizer, stored.ids, lists)
            index = self._ivf(quantizer)
            add_owned(index, stored.ids, vectors, lists, self.shards.owned(lists))
        except Exception as exc:
            self.store.mark_failed(version_id, f"{type(exc).__name__}: {exc}")
            raise
        return Serving(index, version_id, n, as_of)

    def exact(self, stored: StoredVectors, dim: int | None) -> Serving:
        """Exact search over the stored vectors this shard owns."""
        dim = stored.dim or dim
        if dim is None:
            return Serving(None, None)
        index = ExactIndex(dim)
        if stored.ids.shape[0]:
            owned = self.shards.owned(stored.ids)
            if owned is None:
                index.add(stored.ids, stored.vectors)
            else:
                index.add(stored.ids[owned], stored.vectors[owned])
        return Serving(index, None)

    def _ivf(self, quantizer: Quantizer) -> IVFIndex:
        return IVFIndex(quantizer, storage=self.cfg.storage, rerank=self.cfg.rerank)


def lists_for(index: IVFIndex, stored: StoredVectors, version: StoredVersion) -> IdArray:
    """Each stored vector's cluster: its membership row, else (added since) its nearest one."""
    lists = np.full(stored.ids.shape[0], -1, dtype=np.int64)
    if version.member_ids.shape[0]:
        pos = np.searchsorted(version.member_ids, stored.ids)
        pos = np.minimum(pos, version.member_ids.shape[0] - 1)
        found = version.member_ids[pos] == stored.ids
        lists[found] = version.member_lists[pos[found]]
    unplaced = (lists < 0) | (lists >= index.n_clusters)
    if unplaced.any():
        lists[unplaced] = index.assign(stored.vectors[unplaced])
    return lists


def replay(index: VectorIndex | None, journal: Sequence[Change], shards: Shards
           ) -> tuple[VectorIndex | None, IdArray, IdArray]:
    """Apply journalled changes in order to a new index: (index, ids touched, their clusters
    in the new version, -1 where removed) for the membership rows to refresh."""
    touched: list[tuple[IdArray, IdArray]] = []
    for change in journal:
        if change.op == "remove" or change.vectors is None:
            if index is not None:
                index.remove(change.ids)
            touched.append((change.ids, np.full(change.ids.shape[0], -1, dtype=np.int64)))
            continue
        if index is None:
            index = ExactIndex(int(change.vectors.shape[1]))
        if change.vectors.shape[1] != index.dim:
            log.warning("dropping %d vectors of %d dims added during a rebuild to %d dims",
                        change.ids.shape[0], change.vectors.shape[1], index.dim)
            continue
        if index.exact:
            add_owned(index, change.ids, change.vectors, None, shards.owned(change.ids))
            touched.append((change.ids, np.zeros(change.ids.shape[0], dtype=np.int64)))
        else:
            lists = index.assign(change.vectors)
            add_owned(index, change.ids, change.vectors, lists, shards.owned(lists))
            touched.append((change.ids, lists))
    if not touched:
        empty = np.zeros(0, dtype=np.int64)
        return index, empty, empty
    ids = np.concatenate([t[0] for t in touched])
    lists = np.concatenate([t[1] for t in touched])
    keep = last_wins(ids)
    return index, ids[keep], lists[keep]


def trim_heap() -> None:
    """Hand the loader's freed scratch memory back to the OS (glibc keeps it otherwise), so the
    resident size after a load or swap is the index's."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
