"""Background rebuilds, hot swaps under load, replicas picking up versions, drift."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import services.search.serving as serving_module
from services.search.service import IndexService
from shared.config import Settings
from shared.db import IndexVersion
from shared.schemas import RebuildStatus
from tests.unit.search.conftest import DIM, StoreVectors, clustered


def _wait(service: IndexService, timeout: float = 30) -> RebuildStatus:
    deadline = time.monotonic() + timeout
    while (status := service.rebuild_status()).state == "building":
        assert time.monotonic() < deadline, "the rebuild did not finish"
        time.sleep(0.01)
    return status


def _active_versions(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(IndexVersion.id).where(IndexVersion.active.is_(True))))


def test_add_delete_and_background_rebuilds_under_queries_lose_nothing(
        store_vectors: StoreVectors, service: IndexService) -> None:
    x = clustered(600, DIM, seed=3)
    store_vectors(x)
    service.add(list(range(1, 401)), x[:400])
    service.rebuild()
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # collected and asserted on below
                errors.append(exc)
        return run

    def query() -> None:
        rng = np.random.default_rng(1)
        while not stop.is_set():
            # ids 1..200 are never touched: each must always find itself
            i = int(rng.integers(1, 201))
            hits = service.search(x[i - 1], 5, nprobe=8).hits
            assert hits and hits[0].image_id == i, (i, hits[:2])
            assert len({h.image_id for h in hits}) == len(hits)

    def write() -> None:
        for start in range(401, 601, 20):
            service.add(list(range(start, start + 20)), x[start - 1:start + 19])
            service.remove([start - 150])  # ids 251..431 go away

    readers = [threading.Thread(target=guarded(query)) for _ in range(2)]
    for t in readers:
        t.start()
    for _ in range(2):
        service.start_rebuild()
        writer = threading.Thread(target=guarded(write))
        writer.start()
        writer.join(60)
        assert _wait(service).state == "done"
    stop.set()
    for t in readers:
        t.join(60)
    assert errors == []
    removed = set(range(251, 432, 20))
    present = [i for i in range(1, 601) if i not in removed]
    assert service.stats().size == len(present)
    for i in present:  # no lost result: every present vector finds itself
        assert service.search(x[i - 1], 1, nprobe=8).hits[0].image_id == i
    assert len(_active_versions(service.store._sessions)) == 1


def test_a_crash_mid_rebuild_leaves_the_old_version_serving(
        store_vectors: StoreVectors, service: IndexService, sessions: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(200, DIM)
    store_vectors(x)
    old = service.rebuild().index_version

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("killed mid-fit")

    monkeypatch.setattr(serving_module, "fit_quantizer", crash)
    service.start_rebuild()
    status = _wait(service)
    assert status.state == "failed" and "killed mid-fit" in (status.error or "")
    assert service.stats().index_version == old == status.serving_version
    assert _active_versions(sessions) == [old]
    assert service.search(x[7], 1).hits[0].image_id == 8


def test_a_replica_picks_up_the_version_another_one_built(
        store_vectors: StoreVectors, service: IndexService, settings: Settings,
        sessions: sessionmaker[Session]) -> None:
    x = clustered(300, DIM)
    store_vectors(x)
    replica = IndexService(settings, sessions)
    replica.load()
    assert replica.sync_version() is False  # nothing new yet
    built = service.rebuild()
    assert replica.sync_version() is True
    assert replica.stats().index_version == built.index_version
    assert replica.search(x[10], 1).hits[0].image_id == 11
    assert replica.sync_version() is False


def test_drift_says_when_a_rebuild_is_due_and_auto_rebuild_starts_one(
        store_vectors: StoreVectors, settings: Settings, sessions: sessionmaker[Session]) -> None:
    x = clustered(300, DIM)
    store_vectors(x[:200])
    cfg = settings.index.model_copy(update={"rebuild_drift": 0.3, "auto_rebuild": True,
                                            "reload_interval_s": 0.01})
    service = IndexService(settings.model_copy(update={"index": cfg}), sessions)
    service.load()
    service.rebuild()
    fresh = service.stats()
    assert fresh.drift == 0.0 and fresh.rebuild_due is False and fresh.imbalance >= 1.0
    time.sleep(0.02)
    store_vectors(x[200:], first_id=201)  # 100 new vectors: 50% drift
    service.add(list(range(201, 301)), x[200:])
    time.sleep(0.02)  # past the cached counts
    drifted = service.stats()
    assert drifted.added_since_build == 100 and drifted.drift == pytest.approx(0.5)
    assert drifted.rebuild_due is True
    assert service.maybe_auto_rebuild() is True
    assert _wait(service).state == "done"
    assert service.stats().vectors_at_build == 300


def test_an_exact_collection_reports_a_rebuild_due_once_it_outgrows_exact(
        store_vectors: StoreVectors, settings: Settings, sessions: sessionmaker[Session]) -> None:
    cfg = settings.index.model_copy(update={"exact_below": 50})
    service = IndexService(settings.model_copy(update={"index": cfg}), sessions)
    store_vectors(clustered(40, DIM))
    service.load()
    assert service.stats().exact and service.stats().rebuild_due is False
    store_vectors(clustered(20, DIM, seed=5), first_id=41)
    service.load()
    assert service.stats().rebuild_due is True


def test_replicas_of_a_shard_follow_the_adds_the_other_one_received(
        store_vectors: StoreVectors, service: IndexService, settings: Settings,
        sessions: sessionmaker[Session]) -> None:
    from sqlalchemy import update

    from shared.db import Embedding
    from shared.vectors import to_bytes

    x = clustered(300, DIM)
    store_vectors(x)
    service.rebuild()
    replica = IndexService(settings, sessions)
    replica.load()
    assert replica.follow() == 0  # what it loaded is not taken in again
    new = clustered(20, DIM, seed=7)
    ids = store_vectors(new, first_id=1001)  # the worker stores, then one replica is told
    service.add(ids, new)
    assert replica.search(new[3], 1).hits[0].image_id != ids[3]
    assert replica.follow() == 20
    for j in (0, 3, 19):
        assert replica.search(new[j], 1).hits[0].image_id == ids[j]
    assert replica.follow() == 0  # nothing new: nothing added twice
    # a photo captioned again (its vector rewritten) is followed too
    moved = clustered(1, DIM, seed=99)[0]
    with sessions.begin() as session:
        session.execute(update(Embedding).where(Embedding.image_id == ids[5]).values(
            vector=to_bytes(moved), created_at=datetime.now(UTC)))
    assert replica.follow() == 1
    assert replica.search(moved, 1).hits[0].image_id == ids[5]
    assert replica.stats().size == service.stats().size == 320


def test_a_sharded_replica_follows_only_what_its_shard_owns(
        store_vectors: StoreVectors, service: IndexService, settings: Settings,
        sessions: sessionmaker[Session]) -> None:
    store_vectors(clustered(300, DIM))
    service.rebuild()
    shards = []
    for shard_id in (0, 1):
        shard_settings = settings.model_copy(update={"index": settings.index.model_copy(
            update={"n_shards": 2, "shard_id": shard_id})})
        shard = IndexService(shard_settings, sessions)
        shard.load()
        shards.append(shard)
    before = [s.stats().size for s in shards]
    new = clustered(40, DIM, seed=3)
    service.add(store_vectors(new, first_id=2001), new)
    for shard in shards:
        shard.follow()
    after = [s.stats().size for s in shards]
    assert sum(after) - sum(before) == 40  # every new vector on exactly one shard
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_an_empty_replica_follows_into_an_exact_index(
        store_vectors: StoreVectors, settings: Settings, sessions: sessionmaker[Session]) -> None:
    replica = IndexService(settings, sessions)
    replica.load()  # nothing stored yet
    x = clustered(5, DIM)
    ids = store_vectors(x)
    assert replica.follow() == 5
    assert replica.search(x[2], 1).hits[0].image_id == ids[2]


def test_following_an_idle_collection_reads_nothing_and_late_commits_are_kept(
        settings: Settings, sessions: sessionmaker[Session]) -> None:
    from datetime import timedelta

    from sqlalchemy import insert

    from shared.db import Embedding, ImageRecord
    from shared.vectors import to_bytes

    now = datetime.now(UTC)
    x = clustered(4, DIM)

    def put(image_id: int, vector: np.ndarray, written: object) -> None:
        with sessions.begin() as session:
            session.execute(insert(ImageRecord.__table__), [{
                "id": image_id, "sha256": f"{image_id:064x}", "filename": "x.jpg",
                "source": "t", "format": "jpeg", "width": 8, "height": 8, "size_bytes": 1,
                "status": "indexed", "attempts": 0}])
            session.execute(insert(Embedding.__table__), [{
                "image_id": image_id, "kind": "caption", "model": settings.embedding_model,
                "dim": DIM, "vector": to_bytes(vector), "created_at": written}])

    put(1, x[0], now - timedelta(hours=1))
    put(2, x[1], now - timedelta(minutes=30))
    replica = IndexService(settings, sessions)
    replica.load()
    # written long ago: the poll's range starts after them, nothing is read again
    assert replica.store.written_since(replica._follow_from) == []
    put(3, x[2], now)
    assert replica.follow() == 1
    put(4, x[3], now - timedelta(seconds=2))  # stamped before the newest seen, committed after
    assert replica.follow() == 1
    assert {replica.search(x[j], 1).hits[0].image_id for j in (2, 3)} == {3, 4}
    assert replica.follow() == 0
