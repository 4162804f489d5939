"""Search fixtures: clustered synthetic vectors, and SQLite in tmp_path with image and
embedding rows to index."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from services.search.service import IndexService
from shared.config import IndexSettings, Settings
from shared.db import Embedding, EmbeddingKind, ImageRecord, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.vectors import to_bytes

DIM = 16


def clustered(n: int, dim: int, *, centers: int = 20, spread: float = 0.3, seed: int = 0
              ) -> NDArray[np.float32]:
    """n unit vectors drawn around `centers` random directions."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dim))
    x = middle[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # exact_below=0: even these small collections get an IVF index on rebuild
    return Settings(data_dir=tmp_path, index=IndexSettings(exact_below=0, n_clusters=8,
                                                           pca_components=8, nprobe=8))


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


StoreVectors = Callable[[NDArray[np.float32], int], list[int]]


@pytest.fixture
def store_vectors(sessions: sessionmaker[Session], settings: Settings) -> StoreVectors:
    """Insert an image row and a caption vector per row (ids first_id, first_id+1, ...)."""

    def _store(vectors: NDArray[np.float32], first_id: int = 1) -> list[int]:
        ids = list(range(first_id, first_id + vectors.shape[0]))
        with sessions.begin() as session:
            session.execute(insert(ImageRecord.__table__), [
                {"id": i, "sha256": f"{i:064x}", "filename": f"{i}.jpg", "source": "test",
                 "format": "jpeg", "width": 8, "height": 8, "size_bytes": 1, "status": "indexed",
                 "attempts": 0}
                for i in ids])
            session.execute(insert(Embedding.__table__), [
                {"image_id": i, "kind": EmbeddingKind.caption.value,
                 "model": settings.embedding_model, "dim": vectors.shape[1],
                 "vector": to_bytes(v)}
                for i, v in zip(ids, vectors, strict=True)])
        return ids

    return _store


@pytest.fixture
def service(settings: Settings, sessions: sessionmaker[Session]) -> IndexService:
    svc = IndexService(settings, sessions)
    svc.load()
    return svc
