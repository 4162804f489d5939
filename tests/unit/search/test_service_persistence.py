"""IndexService against SQLite: the in-memory index is a cache the database can rebuild."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.search.service import IndexService
from shared.config import Settings
from shared.db import IndexVersion, Membership
from tests.unit.search.conftest import DIM, StoreVectors, clustered


def _memberships(sessions: sessionmaker[Session], version: int) -> dict[int, int]:
    with sessions() as session:
        rows = session.execute(select(Membership.image_id, Membership.cluster_id)
                               .where(Membership.index_version_id == version)).all()
    return dict(rows)


def test_rebuild_then_a_new_service_loads_the_same_answers(
        settings: Settings, sessions: sessionmaker[Session], store_vectors: StoreVectors,
        service: IndexService) -> None:
    x = clustered(300, DIM)
    store_vectors(x)
    built = service.rebuild()
    fresh = IndexService(settings, sessions)
    fresh.load()
    assert built.exact is False and built.n_vectors == 300 and built.n_clusters == 8
    assert fresh.stats() == service.stats()
    for q in x[:20]:
        before, after = service.search(q, 10), fresh.search(q, 10)
        assert [h.image_id for h in after.hits] == [h.image_id for h in before.hits]
        # BLAS may sum in another order for differently aligned buffers: last-bit differences
        assert np.allclose([h.score for h in after.hits], [h.score for h in before.hits],
                           atol=1e-6)
        assert after.index_version == before.index_version


def test_load_builds_exact_from_embeddings_when_no_version_exists(
        store_vectors: StoreVectors, service: IndexService) -> None:
    x = clustered(40, DIM)
    store_vectors(x)
    service.load()
    stats = service.stats()
    hits = service.search(x[5], 1).hits
    assert (stats.exact, stats.size, stats.dim, stats.index_version) == (True, 40, DIM, None)
    assert hits[0].image_id == 6


def test_small_collection_rebuild_stays_exact(
        settings: Settings, sessions: sessionmaker[Session], store_vectors: StoreVectors) -> None:
    store_vectors(clustered(40, DIM))
    svc = IndexService(settings.model_copy(update={"index": settings.index.model_copy(
        update={"exact_below": 1_000})}), sessions)
    svc.load()
    built = svc.rebuild()
    assert (built.exact, built.index_version, built.n_vectors, built.n_clusters) == (
        True, None, 40, 0)


def test_rebuild_activates_exactly_one_version(
        sessions: sessionmaker[Session], store_vectors: StoreVectors,
        service: IndexService) -> None:
    store_vectors(clustered(100, DIM))
    first = service.rebuild().index_version
    second = service.rebuild().index_version
    with sessions() as session:
        active = session.scalars(select(IndexVersion.id).where(IndexVersion.active)).all()
    assert first != second
    assert active == [second]


def test_add_after_rebuild_writes_a_membership_row(
        sessions: sessionmaker[Session], store_vectors: StoreVectors,
        service: IndexService) -> None:
    x = clustered(101, DIM)
    store_vectors(x[:100])
    version = service.rebuild().index_version
    assert version is not None
    (new_id,) = store_vectors(x[100:], first_id=101)
    service.add([new_id], x[100:])
    rows = _memberships(sessions, version)
    assert len(rows) == 101
    assert 0 <= rows[new_id] < 8
    assert service.search(x[100], 1).hits[0].image_id == new_id


def test_remove_deletes_the_membership_row(
        sessions: sessionmaker[Session], store_vectors: StoreVectors,
        service: IndexService) -> None:
    x = clustered(100, DIM)
    store_vectors(x)
    version = service.rebuild().index_version
    assert version is not None
    changed = service.remove([7, 8])
    rows = _memberships(sessions, version)
    assert (changed.count, changed.size) == (2, 98)
    assert 7 not in rows and 8 not in rows and len(rows) == 98


def test_load_assigns_vectors_stored_after_the_version_to_their_nearest_centroid(
        settings: Settings, sessions: sessionmaker[Session], store_vectors: StoreVectors,
        service: IndexService) -> None:
    x = clustered(120, DIM)
    store_vectors(x[:100])
    service.rebuild()
    store_vectors(x[100:], first_id=101)  # stored by the worker, never handed to this replica
    fresh = IndexService(settings, sessions)
    fresh.load()
    assert fresh.stats().size == 120
    assert fresh.search(x[110], 1).hits[0].image_id == 111


def test_empty_index_returns_no_hits(service: IndexService) -> None:
    response = service.search(np.ones(DIM, dtype=np.float32), 10)
    assert response.hits == [] and response.exact is True
