"""Search shards: each replica keeps its clusters (or ids); the merged answer is the whole one."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.search.service import IndexService
from shared.config import Settings
from shared.db import Membership
from shared.shards import merge_search
from tests.unit.search.conftest import DIM, StoreVectors, clustered

N_SHARDS = 3


def _shards(settings: Settings, sessions: sessionmaker[Session], **index: object
            ) -> tuple[IndexService, list[IndexService]]:
    def make(**extra: object) -> IndexService:
        cfg = settings.index.model_copy(update={**index, **extra})
        svc = IndexService(settings.model_copy(update={"index": cfg}), sessions)
        svc.load()
        return svc

    return make(), [make(shard_id=i, n_shards=N_SHARDS) for i in range(N_SHARDS)]


def _merged(shards: list[IndexService], q: np.ndarray, k: int, nprobe: int) -> list[int]:
    return [h.image_id for h in merge_search([s.search(q, k, nprobe) for s in shards], k).hits]


@pytest.mark.parametrize("mode", ["exact", "ivf"])
def test_sharded_merge_equals_the_unsharded_answer(
        mode: str, store_vectors: StoreVectors, settings: Settings,
        sessions: sessionmaker[Session]) -> None:
    x = clustered(400, DIM, seed=2)
    store_vectors(x)
    # re-rank everything scanned, so the answer depends only on the probed clusters
    whole, shards = _shards(settings, sessions, rerank=100_000)
    if mode == "ivf":
        whole.rebuild()
        for shard in shards:
            assert shard.sync_version() is True
    sizes = [s.stats().size for s in shards]
    assert sum(sizes) == 400 and min(sizes) > 0
    assert all(s.stats().exact is (mode == "exact") for s in shards)
    for q in clustered(30, DIM, seed=9):
        for nprobe in (1, 3):
            expected = [h.image_id for h in whole.search(q, 10, nprobe).hits]
            assert _merged(shards, q, 10, nprobe) == expected


def test_every_shard_takes_every_add_and_keeps_only_its_own(
        store_vectors: StoreVectors, settings: Settings, sessions: sessionmaker[Session]) -> None:
    x = clustered(300, DIM, seed=4)
    store_vectors(x[:200])
    whole, shards = _shards(settings, sessions)
    whole.rebuild()
    for shard in shards:
        shard.sync_version()
    store_vectors(x[200:], first_id=201)
    for svc in [whole, *shards]:
        svc.add(list(range(201, 301)), x[200:])
    assert sum(s.stats().size for s in shards) == 300
    # only the owner wrote each membership row: one row per image in the active version
    with sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Membership).where(
            Membership.index_version_id == whole.stats().index_version))
    assert rows == 300
    for i in (5, 250, 299):
        assert _merged(shards, x[i - 1], 1, 8) == [i]
    for svc in [whole, *shards]:
        svc.remove([250])
    assert sum(s.stats().size for s in shards) == 299
    assert 250 not in _merged(shards, x[249], 5, 8)


def test_an_added_vector_that_moves_cluster_leaves_its_old_shard(
        store_vectors: StoreVectors, settings: Settings, sessions: sessionmaker[Session]) -> None:
    x = clustered(200, DIM, seed=6)
    store_vectors(x)
    whole, shards = _shards(settings, sessions)
    whole.rebuild()
    for shard in shards:
        shard.sync_version()
    far = x[150]
    for svc in shards:
        svc.add([1], far[None, :])  # image 1 now sits where image 151 does
    owners = [s for s in shards if 1 in {h.image_id for h in s.search(far, 200, 8).hits}]
    assert len(owners) == 1
    assert sum(s.stats().size for s in shards) == 200


def test_a_shard_id_outside_the_shard_count_is_refused() -> None:
    with pytest.raises(ValueError, match="shard_id"):
        Settings(index={"shard_id": 2, "n_shards": 2})
