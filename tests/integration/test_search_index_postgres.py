"""The search index against real Postgres: binary COPY load, COPY memberships, replicas."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from services.search.service import IndexService
from shared.config import IndexSettings, Settings
from shared.db import Embedding, EmbeddingKind, ImageRecord, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.vectors import to_bytes
from tests.unit.search.conftest import clustered

pytestmark = pytest.mark.integration

N, DIM = 6_000, 32  # above the COPY threshold for membership rows


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = make_engine(postgres_url)
    upgrade(eng)
    yield eng
    with eng.begin() as conn:
        conn.execute(text("TRUNCATE memberships, centroids, index_versions, embeddings, "
                          "captions, images RESTART IDENTITY CASCADE"))
    eng.dispose()


def _fill(sessions: sessionmaker[Session], x: np.ndarray, model: str) -> None:
    ids = range(1, x.shape[0] + 1)
    with sessions.begin() as session:
        session.execute(insert(ImageRecord.__table__), [
            {"id": i, "sha256": f"{i:064x}", "filename": f"{i}.jpg", "source": "it",
             "format": "jpeg", "width": 8, "height": 8, "size_bytes": 1, "status": "indexed",
             "attempts": 0} for i in ids])
        session.execute(insert(Embedding.__table__), [
            {"image_id": i, "kind": EmbeddingKind.caption.value, "model": model, "dim": x.shape[1],
             "vector": to_bytes(v)} for i, v in zip(ids, x, strict=True)])


def test_copy_load_rebuild_and_a_replica_agree(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, database_url=str(engine.url.render_as_string(False)),
                        index=IndexSettings(exact_below=1_000, pca_components=8))
    sessions = make_session_factory(engine)
    x = clustered(N, DIM, centers=40)
    _fill(sessions, x, settings.embedding_model)
    primary = IndexService(settings, sessions)
    primary.load()  # binary COPY of the vectors
    assert primary.stats().size == N and primary.stats().exact
    built = primary.rebuild()  # memberships written by COPY
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM memberships WHERE index_version_id = "
                                 ":v"), {"v": built.index_version}).scalar_one()
    assert rows == N and not built.exact
    replica = IndexService(settings, sessions)
    replica.load()  # COPY of the vectors and of the memberships
    assert replica.stats().index_version == built.index_version
    for i in (1, 777, N):
        assert replica.search(x[i - 1], 1).hits[0].image_id == i
        assert [h.image_id for h in replica.search(x[i - 1], 10).hits] == \
            [h.image_id for h in primary.search(x[i - 1], 10).hits]


def test_a_replica_serves_what_another_replica_of_its_shard_was_sent(engine: Engine,  # type: ignore[no-untyped-def]
                                                                     tmp_path) -> None:
    """Two search services on one Postgres, over HTTP: an add reaches only one of them (as
    behind a Kubernetes Service); the other follows the database within its poll interval."""
    import time

    import httpx

    from capsearch.server import BackgroundServer
    from services.search.app import create_app

    settings = Settings(data_dir=tmp_path, database_url=str(engine.url.render_as_string(False)),
                        index=IndexSettings(exact_below=100, pca_components=8, n_clusters=8,
                                            reload_interval_s=0.2))
    sessions = make_session_factory(engine)
    x = clustered(400, DIM, centers=10)
    _fill(sessions, x, settings.embedding_model)
    with BackgroundServer(create_app(settings)) as a, BackgroundServer(create_app(settings)) as b, \
            httpx.Client(timeout=30) as http:
        for server in (a, b):
            deadline = time.monotonic() + 30
            while http.get(f"{server.url}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "a replica did not load"
                time.sleep(0.1)
        built = http.post(f"{a.url}/v1/index/rebuild", params={"wait": "true"})
        assert built.status_code == 200 and built.json()["exact"] is False
        version = built.json()["index_version"]
        # b reloads a's version before the adds exist: it cannot take them in by a reload
        deadline = time.monotonic() + 15
        while http.get(f"{b.url}/v1/index/stats").json()["index_version"] != version:
            assert time.monotonic() < deadline, "b never took in the new version"
            time.sleep(0.1)
        new = clustered(3, DIM, centers=10, seed=5)
        with sessions.begin() as session:  # what the caption worker stores, then adds
            session.execute(insert(ImageRecord.__table__), [
                {"id": 9000 + j, "sha256": f"{9000 + j:064x}", "filename": "n.jpg",
                 "source": "it", "format": "jpeg", "width": 8, "height": 8, "size_bytes": 1,
                 "status": "captioned", "attempts": 0} for j in range(3)])
            session.execute(insert(Embedding.__table__), [
                {"image_id": 9000 + j, "kind": EmbeddingKind.caption.value,
                 "model": settings.embedding_model, "dim": DIM, "vector": to_bytes(v)}
                for j, v in enumerate(new)])
        added = http.post(f"{a.url}/v1/index/add", json={"items": [
            {"image_id": 9000 + j, "vector": v.tolist()} for j, v in enumerate(new)]})
        assert added.status_code == 200, added.text

        def top(server: BackgroundServer, v: np.ndarray) -> int:
            hits = http.post(f"{server.url}/v1/search", json={"vector": v.tolist(), "k": 1})
            assert hits.status_code == 200, hits.text
            return int(hits.json()["hits"][0]["image_id"])

        assert [top(a, v) for v in new] == [9000, 9001, 9002]
        deadline = time.monotonic() + 15  # b follows the adds a was sent
        while [top(b, v) for v in new] != [9000, 9001, 9002]:
            assert time.monotonic() < deadline, "the other replica never served the adds"
            time.sleep(0.2)
        assert http.get(f"{b.url}/v1/index/stats").json()["index_version"] == version
