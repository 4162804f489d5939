"""Persistence of the index: vectors from `embeddings`, fitted versions, centroids, memberships.

SQLAlchemy 2.x Core statements only (bulk inserts and deletes, no per-row ORM objects on bulk
paths); portable between SQLite and Postgres. The database is the truth; the index is a cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.search.index import IdArray, Matrix, Quantizer
from services.search.pgcopy import copy_pairs_in, copy_rows_out
from shared.db.models import (
    Centroid,
    Embedding,
    EmbeddingKind,
    ImageRecord,
    IndexVersion,
    Membership,
)
from shared.db.queries import chunked, vectors_of
from shared.vectors import from_bytes, stack_bytes, to_bytes

log = logging.getLogger(__name__)

# rows per bulk statement / per fetched partition
_CHUNK = 10_000
# more membership rows than this go to Postgres by COPY
_COPY_ABOVE = 5_000

# Core tables for the bulk statements (no ORM unit-of-work on these paths)
_MEMBERS = Membership.__table__
_CENTROIDS = Centroid.__table__


@dataclass(frozen=True)
class StoredVectors:
    """All stored vectors of one (kind, model): ids ascending, rows as stored."""

    ids: IdArray
    vectors: Matrix  # (n, dim); (0, 0) when there are none

    @property
    def dim(self) -> int | None:
        return int(self.vectors.shape[1]) if self.ids.shape[0] else None


class WrittenVector(NamedTuple):
    """One stored vector and when it was written (what `IndexStore.written_since` reads)."""

    image_id: int
    dim: int
    vector: bytes
    written_at: datetime


@dataclass(frozen=True)
class StoredVersion:
    """An index version as persisted: its quantizer and who is in which cluster."""

    id: int
    quantizer: Quantizer
    member_ids: IdArray  # ascending
    member_lists: IdArray
    n_vectors: int = 0  # how many vectors it was built from
    created_at: datetime | None = None


class IndexStore:
    """Reads and writes the index tables for vectors of one embedding kind and model."""

    def __init__(self, session_factory: sessionmaker[Session], *, kind: EmbeddingKind,
                 model: str) -> None:
        self._sessions = session_factory
        self.kind = kind
        self.model = model
        # the index versions fitted on these vectors (a WHERE clause)
        self._versions = (IndexVersion.embedding_kind == kind.value,
                          IndexVersion.embedding_model == model)

    # ---- vectors and images ------------------------------------------------------------------

    def all_vectors(self) -> StoredVectors:
        """Every stored vector of this kind and model, in one float32 matrix (ids ascending)."""
        of_model = vectors_of(self.model, self.kind)
        with self._sessions() as session:
            dims = session.execute(
                select(Embedding.dim, func.count()).where(*of_model).group_by(Embedding.dim)
                .order_by(func.count().desc(), Embedding.dim)
            ).all()
            if not dims:
                return StoredVectors(np.zeros(0, dtype=np.int64), np.zeros((0, 0), np.float32))
            dim = int(dims[0][0])
            if len(dims) > 1:
                log.warning("embeddings of %s/%s have several dims %s; using %d",
                            self.kind, self.model, [d for d, _ in dims], dim)
            if session.get_bind().dialect.name == "postgresql":
                return self._copy_vectors(session, dim)
            result = session.execute(
                select(Embedding.image_id, Embedding.vector)
                .where(*of_model, Embedding.dim == dim).order_by(Embedding.image_id)
                .execution_options(yield_per=_CHUNK)
            )
            id_parts, vec_parts = [], []
            for rows in result.partitions():
                id_parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64,
                                            count=len(rows)))
                vec_parts.append(stack_bytes([r[1] for r in rows], dim))
        if not id_parts:
            return StoredVectors(np.zeros(0, dtype=np.int64), np.zeros((0, dim), np.float32))
        return StoredVectors(np.concatenate(id_parts), np.concatenate(vec_parts))

    def _copy_vectors(self, session: Session, dim: int) -> StoredVectors:
        """Postgres: one binary COPY of (id, vector) rows parsed with numpy (no per-row objects)."""
        sql = ("COPY (SELECT image_id, vector FROM embeddings WHERE kind = %s AND model = %s "
               "AND dim = %s) TO STDOUT (FORMAT binary)")
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cur:
            query = cur.mogrify(sql, (self.kind.value, self.model, dim)).decode()
            ids, vectors = copy_rows_out(cur, query, dim)
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(order, np.arange(ids.shape[0])):
            ids, vectors = ids[order], vectors[order]
        return StoredVectors(ids, vectors)

    def drift_counts(self, since: datetime | None) -> tuple[int, int]:
        """(stored vectors now, stored vectors written after `since`)."""
        of_model = vectors_of(self.model, self.kind)
        with self._sessions() as session:
            total = int(session.scalar(select(func.count()).select_from(Embedding)
                                       .where(*of_model)) or 0)
            if since is None:
                return total, total
            newer = int(session.scalar(select(func.count()).select_from(Embedding)
                                       .where(*of_model, Embedding.created_at > since)) or 0)
        return total, newer

    def newest_write(self) -> datetime | None:
        """When the newest vector of this kind and model was written (None: there are none)."""
        with self._sessions() as session:
            return session.scalar(select(func.max(Embedding.created_at))
                                  .where(*vectors_of(self.model, self.kind)))

    def written_since(self, since: datetime | None, limit: int = _CHUNK
                      ) -> list[WrittenVector]:
        """The vectors written after `since`, oldest first, at most `limit` (an index range
        scan)."""
        query = select(Embedding.image_id, Embedding.dim, Embedding.vector,
                       Embedding.created_at).where(*vectors_of(self.model, self.kind))
        if since is not None:
            query = query.where(Embedding.created_at > since)
        with self._sessions() as session:
            rows = session.execute(query.order_by(Embedding.created_at, Embedding.image_id)
                                   .limit(limit)).all()
        return [WrittenVector(int(image_id), int(dim), vector, written_at)
                for image_id, dim, vector, written_at in rows]

    def active_version_id(self) -> int | None:
        """The id of the active ready version (a cheap poll for replicas)."""
        with self._sessions() as session:
            return session.scalar(
                select(IndexVersion.id).where(
                    *self._versions, IndexVersion.active.is_(True),
                    IndexVersion.status == "ready")
                .order_by(IndexVersion.id.desc()).limit(1))

    def check_images(self, image_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(ids with no `images` row, ids with an image but no stored vector of this model)."""
        wanted = sorted(set(image_ids))
        stored: dict[int, bool] = {}
        with self._sessions() as session:
            for chunk in chunked(wanted):
                rows = session.execute(
                    select(ImageRecord.id, Embedding.image_id)
                    .outerjoin(Embedding, (Embedding.image_id == ImageRecord.id)
                               & and_(*vectors_of(self.model, self.kind)))
                    .where(ImageRecord.id.in_(chunk))
                ).all()
                stored.update((image_id, vec_of is not None) for image_id, vec_of in rows)
        missing = [i for i in wanted if i not in stored]
        unstored = [i for i in wanted if stored.get(i) is False]
        return missing, unstored

    # ---- versions ----------------------------------------------------------------------------

    def begin_version(self, *, dim: int, n_vectors: int) -> int:
        """A new version row in status `building` (not active); its id."""
        with self._sessions.begin() as session:
            version = IndexVersion(status="building", active=False, embedding_kind=self.kind,
                                   embedding_model=self.model, dim=dim, n_vectors=n_vectors)
            session.add(version)  # one row, not a bulk path
            session.flush()
            return int(version.id)

    def save_version(self, version_id: int, quantizer: Quantizer, member_ids: IdArray,
                     member_lists: IdArray) -> None:
        """Persist a fitted version's PCA, centroids and memberships (it stays inactive)."""
        with self._sessions.begin() as session:
            session.execute(
                update(IndexVersion).where(IndexVersion.id == version_id).values(
                    n_vectors=int(member_ids.shape[0]), n_clusters=quantizer.n_clusters,
                    pca_components=quantizer.pca_dim, pca_mean=to_bytes(quantizer.mean),
                    pca_matrix=to_bytes(quantizer.components))
            )
            session.execute(insert(_CENTROIDS), [
                {"index_version_id": version_id, "cluster_id": c, "vector": to_bytes(row)}
                for c, row in enumerate(quantizer.centroids)
            ])
            self._insert_memberships(session, version_id, member_ids, member_lists)

    def activate_version(self, version_id: int, *, refresh_ids: IdArray | None = None,
                         refresh_lists: IdArray | None = None) -> None:
        """Make a version the one active version, atomically.

        `refresh_ids` are memberships to rewrite in the same transaction (changes made while the
        version was being built): each is deleted, then re-inserted where `refresh_lists` >= 0.
        """
        of_model = self._versions
        with self._sessions.begin() as session:
            # row locks serialise two replicas activating at once (a no-op on SQLite)
            session.execute(select(IndexVersion.id).where(*of_model).with_for_update()).all()
            if refresh_ids is not None and refresh_ids.shape[0]:
                lists = refresh_lists if refresh_lists is not None else \
                    np.full(refresh_ids.shape[0], -1, dtype=np.int64)
                self._delete_memberships(session, version_id, refresh_ids.tolist())
                keep = lists >= 0
                self._insert_memberships(session, version_id, refresh_ids[keep], lists[keep])
            session.execute(update(IndexVersion).where(*of_model, IndexVersion.active.is_(True))
                            .values(active=False))
            session.execute(update(IndexVersion).where(IndexVersion.id == version_id)
                            .values(active=True, status="ready", error=None))

    def mark_failed(self, version_id: int, error: str) -> None:
        with self._sessions.begin() as session:
            session.execute(update(IndexVersion).where(IndexVersion.id == version_id)
                            .values(status="failed", active=False, error=error[:2000]))

    def prune_versions(self, *, keep: int = 2) -> int:
        """Delete finished versions beyond the newest `keep` (the active one always stays)."""
        with self._sessions.begin() as session:
            ids = session.scalars(
                select(IndexVersion.id).where(
                    *self._versions, IndexVersion.active.is_(False),
                    IndexVersion.status.in_(("ready", "failed")))
                .order_by(IndexVersion.id.desc())
            ).all()
            active = session.scalars(select(IndexVersion.id).where(
                *self._versions, IndexVersion.active.is_(True))).all()
            doomed = list(ids[max(0, keep - len(active)):])
            for chunk in chunked(doomed):
                session.execute(delete(_MEMBERS).where(_MEMBERS.c.index_version_id.in_(chunk)))
                session.execute(delete(_CENTROIDS).where(_CENTROIDS.c.index_version_id.in_(chunk)))
                session.execute(delete(IndexVersion.__table__)
                                .where(IndexVersion.__table__.c.id.in_(chunk)))
            return len(doomed)

    def load_active_version(self) -> StoredVersion | None:
        """The active ready version of this kind and model, or None."""
        with self._sessions() as session:
            version = session.execute(
                select(IndexVersion).where(
                    *self._versions, IndexVersion.active.is_(True),
                    IndexVersion.status == "ready")
                .order_by(IndexVersion.id.desc()).limit(1)
            ).scalar_one_or_none()
            if version is None or version.pca_mean is None or version.pca_matrix is None:
                return None
            dim, n_comp = version.dim, version.pca_components
            centroid_rows = list(session.execute(
                select(Centroid.vector).where(Centroid.index_version_id == version.id)
                .order_by(Centroid.cluster_id)
            ).scalars().all())
            pairs = self._members(session, int(version.id))
            mean = from_bytes(version.pca_mean, dim)
            components = from_bytes(version.pca_matrix, n_comp * dim).reshape(n_comp, dim)
            if centroid_rows and len(centroid_rows[0]) == 4 * n_comp and n_comp != dim:
                # versions written before centroids were kept in the full space
                quantizer = Quantizer.from_pca_centroids(
                    mean, components, stack_bytes(centroid_rows, n_comp))
            else:
                quantizer = Quantizer(mean=mean, components=components,
                                      centroids=stack_bytes(centroid_rows, dim))
        return StoredVersion(id=int(version.id), quantizer=quantizer,
                             member_ids=np.ascontiguousarray(pairs[:, 0]),
                             member_lists=np.ascontiguousarray(pairs[:, 1]),
                             n_vectors=int(version.n_vectors or 0),
                             created_at=version.created_at)

    @staticmethod
    def _members(session: Session, version_id: int) -> NDArray[np.int64]:
        """(image_id, cluster_id) rows of a version, ids ascending, as one int64 array."""
        if session.get_bind().dialect.name == "postgresql":
            raw = session.connection().connection.dbapi_connection
            assert raw is not None
            with raw.cursor() as cur:
                ids, lists = copy_rows_out(cur, (
                    "COPY (SELECT image_id, cluster_id FROM memberships WHERE "
                    f"index_version_id = {int(version_id)}) TO STDOUT (FORMAT binary)"), None)
            order = np.argsort(ids, kind="stable")
            return np.stack([ids[order], lists[order]], axis=1)
        members = session.execute(
            select(Membership.image_id, Membership.cluster_id)
            .where(Membership.index_version_id == version_id).order_by(Membership.image_id)
        ).all()
        return np.array(members, dtype=np.int64).reshape(-1, 2)

    # ---- memberships -------------------------------------------------------------------------

    def put_memberships(self, version_id: int, image_ids: IdArray, lists: IdArray) -> None:
        """Set the cluster of each image in a version (replacing any earlier row)."""
        with self._sessions.begin() as session:
            self._delete_memberships(session, version_id, image_ids.tolist())
            self._insert_memberships(session, version_id, image_ids, lists)

    def delete_memberships(self, version_id: int, image_ids: Sequence[int]) -> None:
        with self._sessions.begin() as session:
            self._delete_memberships(session, version_id, list(image_ids))

    @staticmethod
    def _insert_memberships(session: Session, version_id: int, image_ids: IdArray,
                            lists: IdArray) -> None:
        if image_ids.shape[0] > _COPY_ABOVE and session.get_bind().dialect.name == "postgresql":
            raw = session.connection().connection.dbapi_connection
            assert raw is not None
            with raw.cursor() as cur:
                copy_pairs_in(cur, "memberships", ("index_version_id", "image_id", "cluster_id"),
                              version_id, image_ids, lists)
            return
        id_list, list_list = image_ids.tolist(), lists.tolist()
        for start in range(0, len(id_list), _CHUNK):
            session.execute(insert(_MEMBERS), [
                {"index_version_id": version_id, "image_id": i, "cluster_id": c}
                for i, c in zip(id_list[start:start + _CHUNK], list_list[start:start + _CHUNK],
                                strict=True)
            ])

    @staticmethod
    def _delete_memberships(session: Session, version_id: int, image_ids: list[int]) -> None:
        for chunk in chunked(image_ids):
            session.execute(delete(_MEMBERS).where(_MEMBERS.c.index_version_id == version_id,
                                                   _MEMBERS.c.image_id.in_(chunk)))
