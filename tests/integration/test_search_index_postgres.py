"""The search index against real Postgres: binary COPY load, COPY memberships, replicas."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from services.search.service import EMBEDDING_KIND, IndexService
from shared.config import IndexSettings, Settings
from shared.db import Embedding, ImageRecord, create_schema, make_engine, make_session_factory
from shared.vectors import to_bytes
from tests.unit.search.conftest import clustered

pytestmark = pytest.mark.integration

N, DIM = 6_000, 32  # above the COPY threshold for membership rows


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = make_engine(postgres_url)
    create_schema(eng)
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
            {"image_id": i, "kind": EMBEDDING_KIND, "model": model, "dim": x.shape[1],
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
