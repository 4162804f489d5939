"""The index service: the in-memory index kept in step with the database (its source of truth).

`IndexService` implements the `shared.clients.IndexClient` contract (synchronously): the routes
serve it over HTTP, and the embedded mode calls it in-process (`services/search/inprocess.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session, sessionmaker

from services.search.follow import FOLLOW_BATCH, follow_from, take_in
from services.search.index import ExactIndex
from services.search.serving import (
    Builder,
    Change,
    Serving,
    Shards,
    add_owned,
    last_wins,
    replay,
    trim_heap,
)
from services.search.store import IndexStore
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

log = logging.getLogger(__name__)

# an automatic rebuild is not retried sooner than this many poll intervals after the last
AUTO_REBUILD_BACKOFF_POLLS = 12


class IndexNotReady(DependencyUnavailable):
    """The index is still being loaded from the database."""

    code = "index_not_ready"


@dataclass(frozen=True)
class DriftCounts:
    """Stored vectors, and those written since the serving version was built, as read at
    `read_at` (monotonic seconds): read again after a poll interval."""

    read_at: float
    since: datetime | None
    total: int
    added: int


class IndexService:
    """Adds, removes and searches caption vectors; rebuilds and hot-swaps the IVF index.

    With `index.n_shards` > 1 this replica keeps only its shard: the vectors of clusters
    c % n_shards == shard_id (exact mode: image ids), while every version is fitted on, and
    persists memberships for, all vectors. Every shard receives every add and remove and keeps
    what it owns; only the owner writes a vector's membership row.
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 kind: EmbeddingKind = EmbeddingKind.caption, model: str | None = None
                 ) -> None:
        self.settings = settings
        # `caption`: what queries search; `dup`: the near-duplicate vectors (same machinery)
        self.store = IndexStore(session_factory, kind=kind,
                                model=model or settings.embedding_model)
        self.shard_id, self.n_shards = settings.index.shard_id, settings.index.n_shards
        self.shards = Shards(self.shard_id, self.n_shards)
        self.builder = Builder(self.store, settings.index, self.shards)
        self._serving: Serving | None = None
        self._write_lock = threading.Lock()  # serialises add / remove / swap
        self._rebuild_lock = threading.Lock()  # one load or rebuild at a time
        self._journal: list[Change] | None = None
        self._status = RebuildStatus(state="idle")
        self._counts: DriftCounts | None = None
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
        return self._replace(fit=True).rebuilt()

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
            result = self._replace(fit=True, locked=True).rebuilt()
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
        """Take in the vectors other replicas indexed since this one last looked; how many
        (services/search/follow.py says how)."""
        serving = self._serving
        if serving is None or self.rebuilding:
            return 0
        rows = self.store.written_since(self._follow_from, FOLLOW_BATCH)
        if not rows:
            return 0
        with self._write_lock:
            if self._serving is not serving or self._journal is not None:
                return 0  # swapped or rebuilding meanwhile: the next poll starts afresh
            mark = self._follow_mark
            self._serving, taken = take_in(serving, rows, mark, self.shards)
            newest = rows[-1].written_at
            if mark is None or newest > mark:
                self._follow_mark = mark = newest
            if mark is not None:
                self._follow_from = follow_from(mark, full=len(rows) >= FOLLOW_BATCH)
            return taken

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

    def _replace(self, *, fit: bool, locked: bool = False) -> Serving:
        if not locked and not self._rebuild_lock.acquire(blocking=False):
            raise Conflict("a rebuild of the index is already running")
        try:
            with self._write_lock:
                self._journal = []  # changes from now on are replayed onto the new index
            try:
                started = time.perf_counter()
                as_of = datetime.now(UTC)  # vectors written after this count as drift
                mark = self.store.newest_write()  # before the read: `follow` takes it from here
                stored = self.store.all_vectors()
                dim = self._dim()
                candidate = (self.builder.fit(stored, as_of, dim) if fit
                             else self.builder.restore(stored, dim))
                del stored
                serving = self._swap_in(candidate)
                with self._write_lock:
                    self._follow_mark = mark
                    self._follow_from = None if mark is None else follow_from(mark)
                log.info("index %s: %d vectors (shard %d/%d), version %s, %d clusters, %s, "
                         "in %.2f s", "rebuilt" if fit else "loaded", serving.size,
                         self.shard_id, self.n_shards, serving.version_id,
                         serving.index.n_clusters if serving.index else 0,
                         "exact" if serving.index is None or serving.index.exact else "ivf",
                         time.perf_counter() - started)
                if fit and serving.version_id is not None:
                    self._prune()
                trim_heap()
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

    def _swap_in(self, candidate: Serving) -> Serving:
        """Replay changes made meanwhile, activate the version, and swap the reference."""
        with self._write_lock:
            index, ids, lists = replay(candidate.index, self._journal or [], self.shards)
            if candidate.version_id is not None and index is not None:
                self.store.activate_version(candidate.version_id, refresh_ids=ids,
                                            refresh_lists=lists)
            self._serving = Serving(index, candidate.version_id, candidate.built_from,
                                    candidate.built_at)
            self._counts = None
            return self._serving

    # ---- changes -----------------------------------------------------------------------------

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]) -> IndexChangeResponse:
        """Add or replace vectors (an id already indexed is replaced, never duplicated)."""
        ids = as_image_ids(image_ids)
        mat = as_matrix(vectors, rows=ids.shape[0])
        keep = last_wins(ids)
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
                owned = self.shards.owned(lists)
                mine = slice(None) if owned is None else owned
                # the database first: a failed write leaves memory unchanged
                self.store.put_memberships(serving.version_id, u_ids[mine], lists[mine])
                add_owned(index, u_ids, u_mat, lists, owned)
            else:
                add_owned(index, u_ids, u_mat, None, self.shards.owned(u_ids))
            if serving.index is None:
                self._serving = Serving(index, serving.version_id)
            if self._journal is not None:
                self._journal.append(Change("add", u_ids, u_mat))
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
                self._journal.append(Change("remove", ids))
            return IndexChangeResponse(count=removed, size=serving.size)

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
        stats = IndexStats(size=serving.size, dim=index.dim if index is not None else None,
                           index_version=serving.version_id,
                           n_clusters=index.n_clusters if index is not None else 0,
                           exact=index is None or index.exact, shard_id=self.shard_id,
                           n_shards=self.n_shards, storage=getattr(index, "storage", "float32"),
                           memory_bytes=index.nbytes if index is not None else 0,
                           rebuild=self.rebuild_status())
        if serving.version_id is None:
            # exact search: a rebuild is due once the collection has outgrown it
            stats.rebuild_due = not self.builder.exact_enough(total)
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
        if cached is not None and cached.since == since and \
                time.monotonic() - cached.read_at < self.settings.index.reload_interval_s:
            return cached.total, cached.added
        total, added = self.store.drift_counts(since)
        self._counts = DriftCounts(time.monotonic(), since, total, added)
        return total, added

    def _require_serving(self) -> Serving:
        serving = self._serving
        if serving is None:
            raise IndexNotReady("the index is still loading")
        return serving

    def _dim(self) -> int | None:
        serving = self._serving
        return serving.index.dim if serving is not None and serving.index is not None else None


def remove_from_collection(index: IndexService, duplicates: IndexService | None,
                           image_ids: Sequence[int]) -> IndexChangeResponse:
    """Images leave the collection (deleted, or their original lost): out of the caption index
    and out of the near-duplicate index, where they would otherwise keep taking neighbour slots
    of every later upload until a restart. A duplicate index still loading reads the database,
    where the images' vectors go with their rows."""
    changed = index.remove(image_ids)
    if duplicates is not None:
        try:
            duplicates.remove(image_ids)
        except IndexNotReady:
            pass
    return changed
