"""The index service: the in-memory index kept in step with the database (its source of truth).

`IndexService` satisfies `shared.clients.IndexClient`, so the embedded mode calls it in-process
and the gateway and caption worker reach the same object over HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session, sessionmaker

from services.search.index import ExactIndex, IdArray, IVFIndex, Matrix, VectorIndex, build_ivf
from services.search.store import IndexStore, StoredVectors, StoredVersion
from services.search.validation import as_image_ids, as_matrix
from shared.config import Settings
from shared.errors import Conflict, DependencyUnavailable, NotFound, ValidationFailed
from shared.schemas import (
    IndexChangeResponse,
    IndexStats,
    RebuildResponse,
    SearchHit,
    SearchResponse,
)

log = logging.getLogger(__name__)

EMBEDDING_KIND = "caption"
# K-means on fewer vectors than this is meaningless: such collections stay exact
MIN_IVF_VECTORS = 16


class IndexNotReady(DependencyUnavailable):
    """The index is still being loaded from the database."""

    code = "index_not_ready"


@dataclass(frozen=True)
class _Serving:
    """What queries see: an index and the version it came from, swapped as one reference."""

    index: VectorIndex | None  # None until the dimension is known (nothing stored yet)
    version_id: int | None


@dataclass(frozen=True)
class _Change:
    """An add or remove made while a replacement index was being built, to replay onto it."""

    op: Literal["add", "remove"]
    ids: IdArray
    vectors: Matrix | None = None


class IndexService:
    """Adds, removes and searches caption vectors; rebuilds and hot-swaps the IVF index."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.store = IndexStore(session_factory, kind=EMBEDDING_KIND,
                                model=settings.embedding_model)
        self._serving: _Serving | None = None
        self._write_lock = threading.Lock()  # serialises add / remove / swap
        self._rebuild_lock = threading.Lock()  # one load or rebuild at a time
        self._journal: list[_Change] | None = None

    @property
    def loaded(self) -> bool:
        return self._serving is not None

    @property
    def rebuilding(self) -> bool:
        return self._rebuild_lock.locked()

    # ---- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)build the in-memory index from the database alone: active version + vectors."""
        self._replace(fit=False)

    def rebuild(self) -> RebuildResponse:
        """Fit a new version from every stored vector while the old one serves, then swap."""
        if self._serving is None:
            raise IndexNotReady("the index is still loading")
        serving = self._replace(fit=True)
        index = serving.index
        return RebuildResponse(index_version=serving.version_id,
                               n_vectors=len(index) if index is not None else 0,
                               n_clusters=index.n_clusters if index is not None else 0,
                               exact=index is None or index.exact)

    def _replace(self, *, fit: bool) -> _Serving:
        if not self._rebuild_lock.acquire(blocking=False):
            raise Conflict("a rebuild of the index is already running")
        try:
            with self._write_lock:
                self._journal = []  # changes from now on are replayed onto the new index
            try:
                started = time.perf_counter()
                stored = self.store.load_vectors()
                candidate = self._fit(stored) if fit else self._restore(stored)
                serving = self._swap_in(candidate)
                log.info("index %s: %d vectors, version %s, %d clusters, %s, in %.2f s",
                         "rebuilt" if fit else "loaded", _size(serving), serving.version_id,
                         serving.index.n_clusters if serving.index else 0,
                         "exact" if serving.index is None or serving.index.exact else "ivf",
                         time.perf_counter() - started)
                if fit and serving.version_id is not None:
                    self._prune()
                return serving
            finally:
                with self._write_lock:
                    self._journal = None
        finally:
            self._rebuild_lock.release()

    def _prune(self) -> None:
        try:
            pruned = self.store.prune_versions()
        except Exception:  # the new version is live; old rows can go next time
            log.exception("pruning old index versions failed")
            return
        if pruned:
            log.info("pruned %d old index versions", pruned)

    def _exact_enough(self, n_vectors: int) -> bool:
        return n_vectors < max(self.settings.index.exact_below, MIN_IVF_VECTORS)

    def _restore(self, stored: StoredVectors) -> _Serving:
        """The serving index from what the database holds, without fitting anything."""
        version = self.store.load_active_version()
        n = stored.ids.shape[0]
        if version is not None and n and version.quantizer.dim != stored.dim:
            log.warning("index version %d has %d dims but stored vectors have %s: serving exact",
                        version.id, version.quantizer.dim, stored.dim)
            version = None
        if version is None or self._exact_enough(n):
            return _exact_from(stored, self._dim())
        index = IVFIndex(version.quantizer)
        index.add(stored.ids, stored.vectors, _lists_for(index, stored, version))
        return _Serving(index, version.id)

    def _fit(self, stored: StoredVectors) -> _Serving:
        """A freshly fitted, persisted (not yet active) version, or exact for small sets."""
        n = stored.ids.shape[0]
        if stored.dim is None or self._exact_enough(n):
            return _exact_from(stored, self._dim())
        cfg = self.settings.index
        version_id = self.store.begin_version(dim=stored.dim, n_vectors=n)
        try:
            index = build_ivf(stored.ids, stored.vectors, n_clusters=cfg.n_clusters,
                              pca_components=cfg.pca_components, seed=cfg.seed)
            self.store.save_version(version_id, index.quantizer, stored.ids,
                                    index.lists_of(stored.ids))
        except Exception as exc:
            self.store.mark_failed(version_id, f"{type(exc).__name__}: {exc}")
            raise
        return _Serving(index, version_id)

    def _swap_in(self, candidate: _Serving) -> _Serving:
        """Replay changes made meanwhile, activate the version, and swap the reference."""
        with self._write_lock:
            index, touched = _replay(candidate.index, self._journal or [])
            if candidate.version_id is not None and index is not None:
                self.store.activate_version(candidate.version_id, refresh_ids=touched,
                                            refresh_lists=index.lists_of(touched))
            self._serving = _Serving(index, candidate.version_id)
            return self._serving

    # ---- changes -----------------------------------------------------------------------------

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]) -> IndexChangeResponse:
        """Add or replace vectors (an id already indexed is replaced, never duplicated)."""
        ids = as_image_ids(image_ids)
        mat = as_matrix(vectors, rows=ids.shape[0])
        with self._write_lock:
            serving = self._require_serving()
            index = serving.index
            if index is None:
                index = ExactIndex(int(mat.shape[1]))
            elif mat.shape[1] != index.dim:
                raise ValidationFailed(f"vectors have {mat.shape[1]} dims; the index has "
                                       f"{index.dim}")
            missing, unstored = self.store.check_images(ids.tolist())
            if missing:
                raise NotFound(f"no such images: {missing[:10]}")
            if unstored:
                # the index is a cache of `embeddings`: these vanish on the next load or rebuild
                log.warning("indexing %d images with no stored %s vector of %s, e.g. %s",
                            len(unstored), EMBEDDING_KIND, self.store.model, unstored[:5])
            if serving.version_id is not None:
                lists = index.assign(mat)
                # the database first: a failed write leaves memory unchanged
                self.store.put_memberships(serving.version_id, *_last_wins_ids(ids, lists))
                index.add(ids, mat, lists)
            else:
                index.add(ids, mat)
            if serving.index is None:
                self._serving = _Serving(index, serving.version_id)
            if self._journal is not None:
                self._journal.append(_Change("add", ids, mat))
            return IndexChangeResponse(count=int(np.unique(ids).shape[0]), size=len(index))

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        """Take images out of the index; ids not in it are ignored."""
        ids = as_image_ids(image_ids)
        with self._write_lock:
            serving = self._require_serving()
            if serving.version_id is not None:
                self.store.delete_memberships(serving.version_id, ids.tolist())
            removed = serving.index.remove(ids) if serving.index is not None else 0
            if self._journal is not None:
                self._journal.append(_Change("remove", ids))
            return IndexChangeResponse(count=removed, size=_size(serving))

    # ---- queries -----------------------------------------------------------------------------

    def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
               ) -> SearchResponse:
        """The k images whose vectors are nearest (cosine) to the query vector."""
        if k < 1:
            raise ValidationFailed("k must be at least 1")
        if nprobe is not None and nprobe < 1:
            raise ValidationFailed("nprobe must be at least 1")
        query = as_matrix(vector)
        if query.shape[0] != 1:
            raise ValidationFailed("search takes exactly one query vector")
        serving = self._require_serving()  # one read: the whole query sees one index
        index = serving.index
        exact = index is None or index.exact
        if index is None or len(index) == 0:
            return SearchResponse(hits=[], index_version=serving.version_id, exact=exact)
        if query.shape[1] != index.dim:
            raise ValidationFailed(f"query has {query.shape[1]} dims; the index has {index.dim}")
        ids, scores = index.search(query[0], k, nprobe or self.settings.index.nprobe)
        hits = [SearchHit(image_id=i, score=s)
                for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]
        return SearchResponse(hits=hits, index_version=serving.version_id, exact=exact)

    def stats(self) -> IndexStats:
        serving = self._require_serving()
        index = serving.index
        return IndexStats(size=_size(serving), dim=index.dim if index is not None else None,
                          index_version=serving.version_id,
                          n_clusters=index.n_clusters if index is not None else 0,
                          exact=index is None or index.exact)

    def _require_serving(self) -> _Serving:
        serving = self._serving
        if serving is None:
            raise IndexNotReady("the index is still loading")
        return serving

    def _dim(self) -> int | None:
        serving = self._serving
        return serving.index.dim if serving is not None and serving.index is not None else None


def _replay(index: VectorIndex | None, journal: list[_Change]
            ) -> tuple[VectorIndex | None, IdArray]:
    """Apply journalled changes in order to a new index; the ids they touched."""
    touched: list[IdArray] = []
    for change in journal:
        if change.op == "remove":
            if index is not None:
                index.remove(change.ids)
        elif change.vectors is not None:
            if index is None:
                index = ExactIndex(int(change.vectors.shape[1]))
            if change.vectors.shape[1] != index.dim:
                log.warning("dropping %d vectors of %d dims added during a rebuild to %d dims",
                            change.ids.shape[0], change.vectors.shape[1], index.dim)
                continue
            index.add(change.ids, change.vectors)
        touched.append(change.ids)
    ids = np.unique(np.concatenate(touched)) if touched else np.zeros(0, dtype=np.int64)
    return index, ids


def _size(serving: _Serving) -> int:
    return len(serving.index) if serving.index is not None else 0


def _exact_from(stored: StoredVectors, fallback_dim: int | None) -> _Serving:
    dim = stored.dim or fallback_dim
    if dim is None:
        return _Serving(None, None)
    index = ExactIndex(dim)
    if stored.ids.shape[0]:
        index.add(stored.ids, stored.vectors)
    return _Serving(index, None)


def _lists_for(index: IVFIndex, stored: StoredVectors, version: StoredVersion) -> IdArray:
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


def _last_wins_ids(ids: IdArray, lists: IdArray) -> tuple[IdArray, IdArray]:
    """One (id, list) per id, the last of a batch winning, as the index itself does."""
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    keep = ids.shape[0] - 1 - first_from_end
    return ids[keep], lists[keep]
