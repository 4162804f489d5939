"""The index service: the in-memory index kept in step with the database (its source of truth).

`IndexService` implements the `shared.clients.IndexClient` contract (synchronously): the routes
serve it over HTTP, and the embedded mode calls it in-process (`services/search/inprocess.py`).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session, sessionmaker

from services.search.index import (
    ExactIndex,
    IdArray,
    IVFIndex,
    Matrix,
    VectorIndex,
    fit_quantizer,
    unit_rows,
)
from services.search.store import IndexStore, StoredVectors, StoredVersion
from services.search.validation import as_image_ids, as_matrix
from shared.config import Settings
from shared.db import EmbeddingKind
from shared.errors import Conflict, DependencyUnavailable, NotFound, ValidationFailed
from shared.schemas import (
    IndexChangeResponse,
    IndexStats,
    RebuildResponse,
    RebuildStatus,
    SearchHit,
    SearchResponse,
)
from shared.vectors import from_bytes

log = logging.getLogger(__name__)

# K-means on fewer vectors than this is meaningless: such collections stay exact
MIN_IVF_VECTORS = 16
# an automatic rebuild is not retried sooner than this many poll intervals after the last
AUTO_REBUILD_BACKOFF_POLLS = 12
# `follow` re-reads this far behind the newest write it saw: a transaction that stamped its
# rows earlier but committed later is still picked up
FOLLOW_SLACK = timedelta(seconds=10)
# vectors `follow` reads per poll at most
FOLLOW_BATCH = 10_000


class IndexNotReady(DependencyUnavailable):
    """The index is still being loaded from the database."""

    code = "index_not_ready"


@dataclass(frozen=True)
class _Serving:
    """What queries see: an index and the version it came from, swapped as one reference."""

    index: VectorIndex | None  # None until the dimension is known (nothing stored yet)
    version_id: int | None
    built_from: int = 0  # vectors the version was fitted on (all shards)
    built_at: datetime | None = None


@dataclass(frozen=True)
class _Change:
    """An add or remove made while a replacement index was being built, to replay onto it."""

    op: Literal["add", "remove"]
    ids: IdArray
    vectors: Matrix | None = None


class IndexService:
    """Adds, removes and searches caption vectors; rebuilds and hot-swaps the IVF index.

    With `index.n_shards` > 1 this replica keeps only its shard: the vectors of clusters
    c % n_shards == shard_id (exact mode: image ids), while every version is fitted on, and
    persists memberships for, all vectors. Every shard receives every add and remove and keeps
    what it owns; only the owner writes a vector's membership row.
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.store = IndexStore(session_factory, kind=EmbeddingKind.caption,
                                model=settings.embedding_model)
        self.shard_id, self.n_shards = settings.index.shard_id, settings.index.n_shards
        self._serving: _Serving | None = None
        self._write_lock = threading.Lock()  # serialises add / remove / swap
        self._rebuild_lock = threading.Lock()  # one load or rebuild at a time
        self._journal: list[_Change] | None = None
        self._status = RebuildStatus(state="idle")
        self._counts: tuple[float, datetime | None, tuple[int, int]] | None = None
        self._last_auto = -float("inf")
        # the newest vector write this replica has (from its load, or followed since), and
        # where the next `follow` reads from
        self._follow_mark: datetime | None = None
        self._follow_from: datetime | None = None

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
        return _rebuilt(self._replace(fit=True))

    def start_rebuild(self) -> RebuildStatus:
        """Start a rebuild in a background thread (the old version serves meanwhile)."""
        if self._serving is None:
            raise IndexNotReady("the index is still loading")
        if not self._rebuild_lock.acquire(blocking=False):
            raise Conflict("a rebuild of the index is already running")
        # the thread owns the lock from here: no second rebuild can slip in before it starts
        self._status = RebuildStatus(state="building", started_at=datetime.now(UTC),
                                     serving_version=self._serving.version_id)
        threading.Thread(target=self._rebuild_in_background, name="index-rebuild",
                         daemon=True).start()
        return self.rebuild_status()

    def rebuild_status(self) -> RebuildStatus:
        serving = self._serving
        return self._status.model_copy(
            update={"serving_version": serving.version_id if serving else None})

    def _rebuild_in_background(self) -> None:
        try:
            result = _rebuilt(self._replace(fit=True, locked=True))
        except Exception as exc:  # reported through the status; the old version serves on
            log.exception("background rebuild failed")
            self._status = self._status.model_copy(update={
                "state": "failed", "finished_at": datetime.now(UTC),
                "error": f"{type(exc).__name__}: {exc}"[:2000]})
            return
        self._status = self._status.model_copy(update={
            "state": "done", "finished_at": datetime.now(UTC), "result": result})

    def sync_version(self) -> bool:
        """Reload if another replica activated a new version; whether it reloaded."""
        serving = self._serving
        if serving is None or self.rebuilding:
            return False
        active = self.store.active_version_id()
        if active == serving.version_id:
            return False
        log.info("active index version changed %s -> %s: reloading", serving.version_id, active)
        try:
            self.load()
        except Conflict:  # a rebuild started meanwhile; it swaps in its own version
            return False
        return True

    def follow(self) -> int:
        """Take in the vectors other replicas indexed since this one last looked; how many.

        Replicas of one shard behind one Service each receive a share of the adds; the
        database has them all (`embeddings`). Every poll reads the vectors written after the
        newest one this replica has (less `FOLLOW_SLACK`, so late commits are not lost): newer
        ones are added (a re-captioned photo's vector replaces its old one; this replica's own
        adds come back once, harmlessly), older ones only if absent here.
        Removals need no following: the gateway drops hits whose image is gone, and the next
        load or rebuild forgets them.
        """
        serving = self._serving
        if serving is None or self.rebuilding:
            return 0
        rows = self.store.written_since(self._follow_from, FOLLOW_BATCH)
        if not rows:
            return 0
        with self._write_lock:
            if self._serving is not serving or self._journal is not None:
                return 0  # swapped or rebuilding meanwhile: the next poll starts afresh
            index, mark = serving.index, self._follow_mark
            dim = index.dim if index is not None else rows[-1][1]
            usable = [r for r in rows if r[1] == dim]  # (the load warned about other dims)
            fresh = [r for r in usable if mark is None or r[3] > mark]
            fresh_ids = {r[0] for r in fresh}
            older = [r for r in usable if r[0] not in fresh_ids]
            if older and index is not None:  # late commits: only those not here yet
                present = index.lists_of(np.array([r[0] for r in older], dtype=np.int64))
                older = [r for r, where in zip(older, present.tolist(), strict=True)
                         if where < 0]
            todo = list({r[0]: r for r in older + fresh}.values())  # the latest row per id
            if todo:
                ids = np.array([r[0] for r in todo], dtype=np.int64)
                mat = unit_rows(np.stack([from_bytes(r[2], dim) for r in todo]), dim)
                if index is None:
                    index = ExactIndex(dim)
                    self._serving = serving = _Serving(index, serving.version_id)
                if serving.version_id is not None and not index.exact:
                    lists = index.assign(mat)
                    _add_owned(index, ids, mat, lists, self._owned(lists))
                else:
                    _add_owned(index, ids, mat, None, self._owned(ids))
            newest = rows[-1][3]
            if mark is None or newest > mark:
                self._follow_mark = mark = newest
            if mark is not None:
                self._follow_from = _follow_from(mark, full=len(rows) >= FOLLOW_BATCH)
            return len(todo)

    def maybe_auto_rebuild(self) -> bool:
        """With `index.auto_rebuild`, shard 0 starts a rebuild once one is due."""
        cfg = self.settings.index
        if not cfg.auto_rebuild or self.shard_id != 0 or self.rebuilding or not self.loaded:
            return False
        if time.monotonic() - self._last_auto < AUTO_REBUILD_BACKOFF_POLLS * cfg.reload_interval_s:
            return False
        if not self.stats().rebuild_due:
            return False
        self._last_auto = time.monotonic()
        try:
            self.start_rebuild()
        except Conflict:
            return False
        log.info("rebuild due: started one automatically")
        return True

    def _replace(self, *, fit: bool, locked: bool = False) -> _Serving:
        if not locked and not self._rebuild_lock.acquire(blocking=False):
            raise Conflict("a rebuild of the index is already running")
        try:
            with self._write_lock:
                self._journal = []  # changes from now on are replayed onto the new index
            try:
                started = time.perf_counter()
                as_of = datetime.now(UTC)  # vectors written after this count as drift
                mark = self.store.newest_write()  # before the read: `follow` takes it from here
                stored = self.store.load_vectors()
                candidate = self._fit(stored, as_of) if fit else self._restore(stored)
                del stored
                serving = self._swap_in(candidate)
                with self._write_lock:
                    self._follow_mark = mark
                    self._follow_from = None if mark is None else _follow_from(mark)
                log.info("index %s: %d vectors (shard %d/%d), version %s, %d clusters, %s, "
                         "in %.2f s", "rebuilt" if fit else "loaded", _size(serving),
                         self.shard_id, self.n_shards, serving.version_id,
                         serving.index.n_clusters if serving.index else 0,
                         "exact" if serving.index is None or serving.index.exact else "ivf",
                         time.perf_counter() - started)
                if fit and serving.version_id is not None:
                    self._prune()
                _trim_heap()
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

    def _owned(self, keys: IdArray) -> NDArray[np.bool_] | None:
        """Which keys (cluster ids, or image ids in exact mode) are this shard's; None = all."""
        if self.n_shards == 1:
            return None
        return keys % self.n_shards == self.shard_id

    def _new_ivf(self, version: StoredVersion | None, quantizer: object = None) -> IVFIndex:
        cfg = self.settings.index
        q = version.quantizer if version is not None else quantizer
        return IVFIndex(q, storage=cfg.storage, rerank=cfg.rerank)  # type: ignore[arg-type]

    def _restore(self, stored: StoredVectors) -> _Serving:
        """The serving index from what the database holds, without fitting anything."""
        version = self.store.load_active_version()
        n = stored.ids.shape[0]
        if version is not None and n and version.quantizer.dim != stored.dim:
            log.warning("index version %d has %d dims but stored vectors have %s: serving exact",
                        version.id, version.quantizer.dim, stored.dim)
            version = None
        if version is None or self._exact_enough(n):
            return self._exact_from(stored)
        index = self._new_ivf(version)
        lists = _lists_for(index, stored, version)
        _add_owned(index, stored.ids, stored.vectors, lists, self._owned(lists))
        return _Serving(index, version.id, version.n_vectors, version.created_at)

    def _fit(self, stored: StoredVectors, as_of: datetime) -> _Serving:
        """A freshly fitted, persisted (not yet active) version, or exact for small sets."""
        n = stored.ids.shape[0]
        if stored.dim is None or self._exact_enough(n):
            return self._exact_from(stored)
        cfg = self.settings.index
        version_id = self.store.begin_version(dim=stored.dim, n_vectors=n)
        try:
            vectors = unit_rows(stored.vectors, stored.dim)
            quantizer = fit_quantizer(vectors, n_clusters=cfg.n_clusters,
                                      pca_components=cfg.pca_components, seed=cfg.seed)
            lists = quantizer.assign(vectors)
            self.store.save_version(version_id, quantizer, stored.ids, lists)
            index = self._new_ivf(None, quantizer)
            _add_owned(index, stored.ids, vectors, lists, self._owned(lists))
        except Exception as exc:
            self.store.mark_failed(version_id, f"{type(exc).__name__}: {exc}")
            raise
        return _Serving(index, version_id, n, as_of)

    def _exact_from(self, stored: StoredVectors) -> _Serving:
        dim = stored.dim or self._dim()
        if dim is None:
            return _Serving(None, None)
        index = ExactIndex(dim)
        if stored.ids.shape[0]:
            owned = self._owned(stored.ids)
            if owned is None:
                index.add(stored.ids, stored.vectors)
            else:
                index.add(stored.ids[owned], stored.vectors[owned])
        return _Serving(index, None)

    def _swap_in(self, candidate: _Serving) -> _Serving:
        """Replay changes made meanwhile, activate the version, and swap the reference."""
        with self._write_lock:
            index, ids, lists = _replay(candidate.index, self._journal or [], self._owned)
            if candidate.version_id is not None and index is not None:
                self.store.activate_version(candidate.version_id, refresh_ids=ids,
                                            refresh_lists=lists)
            self._serving = _Serving(index, candidate.version_id, candidate.built_from,
                                     candidate.built_at)
            self._counts = None
            return self._serving

    # ---- changes -----------------------------------------------------------------------------

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]) -> IndexChangeResponse:
        """Add or replace vectors (an id already indexed is replaced, never duplicated)."""
        ids = as_image_ids(image_ids)
        mat = as_matrix(vectors, rows=ids.shape[0])
        keep = _last_wins(ids)
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
                            len(unstored), self.store.kind, self.store.model, unstored[:5])
            u_ids, u_mat = ids[keep], mat[keep]
            if serving.version_id is not None:
                lists = index.assign(u_mat)
                owned = self._owned(lists)
                mine = slice(None) if owned is None else owned
                # the database first: a failed write leaves memory unchanged
                self.store.put_memberships(serving.version_id, u_ids[mine], lists[mine])
                _add_owned(index, u_ids, u_mat, lists, owned)
            else:
                owned = self._owned(u_ids)
                _add_owned(index, u_ids, u_mat, None, owned)
            if serving.index is None:
                self._serving = _Serving(index, serving.version_id)
            if self._journal is not None:
                self._journal.append(_Change("add", u_ids, u_mat))
            return IndexChangeResponse(count=int(u_ids.shape[0]), size=len(index))

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
        """Size, shape, memory, and the drift that says when a rebuild is due."""
        serving = self._require_serving()
        index = serving.index
        cfg = self.settings.index
        total, added = self._drift_counts(serving.built_at if serving.version_id else None)
        stats = IndexStats(size=_size(serving), dim=index.dim if index is not None else None,
                           index_version=serving.version_id,
                           n_clusters=index.n_clusters if index is not None else 0,
                           exact=index is None or index.exact, shard_id=self.shard_id,
                           n_shards=self.n_shards, storage=getattr(index, "storage", "float32"),
                           memory_bytes=index.nbytes if index is not None else 0,
                           rebuild=self.rebuild_status())
        if serving.version_id is None:
            # exact search: a rebuild is due once the collection has outgrown it
            stats.rebuild_due = not self._exact_enough(total)
            return stats
        removed = max(0, serving.built_from + added - total)
        sizes = index.list_sizes()[self.shard_id::self.n_shards] if index is not None else None
        stats.vectors_at_build = serving.built_from
        stats.added_since_build, stats.removed_since_build = added, removed
        stats.drift = (added + removed) / max(1, serving.built_from)
        if sizes is not None and sizes.size and sizes.mean() > 0:
            stats.imbalance = float(sizes.max() / sizes.mean())
        stats.rebuild_due = stats.drift >= cfg.rebuild_drift
        return stats

    def _drift_counts(self, since: datetime | None) -> tuple[int, int]:
        """(stored vectors, written since `since`) from the database, cached for a poll."""
        cached = self._counts
        if cached is not None and cached[1] == since and \
                time.monotonic() - cached[0] < self.settings.index.reload_interval_s:
            return cached[2]
        counts = self.store.drift_counts(since)
        self._counts = (time.monotonic(), since, counts)
        return counts

    def _require_serving(self) -> _Serving:
        serving = self._serving
        if serving is None:
            raise IndexNotReady("the index is still loading")
        return serving

    def _dim(self) -> int | None:
        serving = self._serving
        return serving.index.dim if serving is not None and serving.index is not None else None


def _follow_from(mark: datetime, *, full: bool = False) -> datetime:
    """Where the next `follow` reads from: `FOLLOW_SLACK` behind the newest write seen, but no
    further back than `FOLLOW_SLACK` before now (older rows have long committed: an idle
    collection is not re-read every poll); after a full batch, its end (or it could loop)."""
    if full:
        return mark
    now = datetime.now(UTC)
    if mark.tzinfo is None:  # SQLite hands datetimes back naive (UTC)
        now = now.replace(tzinfo=None)
    return max(mark - FOLLOW_SLACK, min(mark, now - FOLLOW_SLACK))


def _trim_heap() -> None:
    """Hand the loader's freed scratch memory back to the OS (glibc keeps it otherwise), so the
    resident size after a load or swap is the index's."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _rebuilt(serving: _Serving) -> RebuildResponse:
    index = serving.index
    return RebuildResponse(index_version=serving.version_id,
                           n_vectors=len(index) if index is not None else 0,
                           n_clusters=index.n_clusters if index is not None else 0,
                           exact=index is None or index.exact)


def _add_owned(index: VectorIndex, ids: IdArray, vectors: Matrix, lists: IdArray | None,
               owned: NDArray[np.bool_] | None) -> None:
    """Add the owned vectors (all when `owned` is None); drop the others if present."""
    if owned is None:
        index.add(ids, vectors, lists)
        return
    if owned.any():
        index.add(ids[owned], vectors[owned], None if lists is None else lists[owned])
    if not owned.all():
        index.remove(ids[~owned])  # an id replaced by a vector of another shard's cluster


def _replay(index: VectorIndex | None, journal: list[_Change],
            owned: Callable[[IdArray], NDArray[np.bool_] | None]
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
            _add_owned(index, change.ids, change.vectors, None, owned(change.ids))
            touched.append((change.ids, np.zeros(change.ids.shape[0], dtype=np.int64)))
        else:
            lists = index.assign(change.vectors)
            _add_owned(index, change.ids, change.vectors, lists, owned(lists))
            touched.append((change.ids, lists))
    if not touched:
        empty = np.zeros(0, dtype=np.int64)
        return index, empty, empty
    ids = np.concatenate([t[0] for t in touched])
    lists = np.concatenate([t[1] for t in touched])
    keep = _last_wins(ids)
    return index, ids[keep], lists[keep]


def _size(serving: _Serving) -> int:
    return len(serving.index) if serving.index is not None else 0


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


def _last_wins(ids: IdArray) -> IdArray:
    """Positions keeping one entry per id, the last of a batch winning (as the index does)."""
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    return np.sort(ids.shape[0] - 1 - first_from_end)
