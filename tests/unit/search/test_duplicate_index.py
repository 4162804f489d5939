"""The search service's near-duplicate index: its own vectors (kind `dup`), its own routes,
spoken to by the shared HTTP client with `space="duplicates"`."""

from __future__ import annotations

import time

import anyio
import httpx
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from services.search.app import create_app
from services.search.inprocess import InProcessIndexClient
from services.search.service import IndexService
from shared.clients import HttpIndexClient
from shared.config import Settings
from shared.db import Embedding, EmbeddingKind
from shared.duplicates import duplicate_vector_model, unit_rows
from shared.vectors import to_bytes
from tests.unit.search.conftest import DIM, StoreVectors, clustered


def store_dup_vectors(sessions: sessionmaker[Session], settings: Settings,
                      ids: list[int], vectors: np.ndarray) -> None:
    with sessions.begin() as session:
        session.execute(insert(Embedding.__table__), [
            {"image_id": i, "kind": EmbeddingKind.dup.value,
             "model": duplicate_vector_model(settings), "dim": v.shape[0],
             "vector": to_bytes(v)} for i, v in zip(ids, vectors, strict=True)])


def test_the_duplicate_index_loads_only_duplicate_vectors(
        settings: Settings, sessions: sessionmaker[Session],
        store_vectors: StoreVectors) -> None:
    ids = store_vectors(clustered(20, DIM))  # caption vectors: not the duplicate index's
    dup = unit_rows(np.random.default_rng(0).normal(size=(5, 12)))
    store_dup_vectors(sessions, settings, ids[:5], dup)
    service = IndexService(settings, sessions, kind=EmbeddingKind.dup,
                           model=duplicate_vector_model(settings))
    service.load()
    stats = service.stats()
    assert (stats.size, stats.dim) == (5, 12)
    assert service.search(dup[3], 1).hits[0].image_id == ids[3]


def test_the_service_serves_both_indexes_on_their_own_routes(
        settings: Settings, sessions: sessionmaker[Session],
        store_vectors: StoreVectors) -> None:
    caption = clustered(10, DIM)
    ids = store_vectors(caption)
    dup = unit_rows(np.random.default_rng(1).normal(size=(10, 12)))
    store_dup_vectors(sessions, settings, ids, dup)

    async def _round_trip(app: object) -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        dups = HttpIndexClient("http://search", transport=transport, space="duplicates")
        captions = HttpIndexClient("http://search", transport=transport)
        try:
            assert (await dups.search(dup[4], 1)).hits[0].image_id == ids[4]
            assert (await captions.search(caption[4], 1)).hits[0].image_id == ids[4]
            assert (await dups.remove([ids[4]])).count == 1
            assert (await dups.stats()).size == 9 and (await captions.stats()).size == 10
            await dups.add([ids[4]], dup[4:5])
            assert (await dups.stats()).size == 10
        finally:
            await dups.aclose()
            await captions.aclose()

    with TestClient(create_app(settings)) as client:  # both built from settings
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while (client.get("/v1/duplicates/index/stats").status_code != 200
               and time.monotonic() < deadline):
            time.sleep(0.02)
        anyio.run(_round_trip, client.app)


def test_an_app_without_a_duplicate_index_answers_503(settings: Settings,
                                                      service: IndexService) -> None:
    with TestClient(create_app(settings, service)) as client:
        resp = client.post("/v1/duplicates/search", json={"vector": [1.0, 0.0], "k": 1})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "dependency_unavailable"


def test_with_duplicates_off_the_service_holds_no_duplicate_index(settings: Settings) -> None:
    off = settings.model_copy(update={"duplicates": False})
    with TestClient(create_app(off)) as client:
        resp = client.get("/v1/duplicates/index/stats")
    assert resp.status_code == 503


def _ready(client: TestClient, path: str) -> None:
    deadline = time.monotonic() + 10
    while client.get(path).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_an_image_leaving_the_collection_leaves_the_duplicate_index_too(
        settings: Settings, sessions: sessionmaker[Session],
        store_vectors: StoreVectors) -> None:
    # a deleted photo must not keep taking a neighbour slot of every later upload
    ids = store_vectors(clustered(6, DIM))
    dup = unit_rows(np.random.default_rng(2).normal(size=(6, 12)))
    store_dup_vectors(sessions, settings, ids, dup)

    async def _remove(app: object) -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        captions = HttpIndexClient("http://search", transport=transport)
        dups = HttpIndexClient("http://search", transport=transport, space="duplicates")
        try:
            assert (await captions.remove([ids[2]])).count == 1
            assert (await dups.stats()).size == 5
            assert ids[2] not in {h.image_id for h in (await dups.search(dup[2], 6)).hits}
        finally:
            await captions.aclose()
            await dups.aclose()

    with TestClient(create_app(settings)) as client:
        _ready(client, "/readyz")
        _ready(client, "/v1/duplicates/index/stats")
        anyio.run(_remove, client.app)


def test_the_embedded_index_client_removes_from_both_indexes(
        settings: Settings, sessions: sessionmaker[Session],
        store_vectors: StoreVectors) -> None:
    ids = store_vectors(clustered(6, DIM))
    store_dup_vectors(sessions, settings, ids,
                      unit_rows(np.random.default_rng(3).normal(size=(6, 12))))
    captions = IndexService(settings, sessions)
    dups = IndexService(settings, sessions, kind=EmbeddingKind.dup,
                        model=duplicate_vector_model(settings))
    captions.load()
    dups.load()
    anyio.run(InProcessIndexClient(captions, dups).remove, [ids[1], ids[4]])
    assert (captions.stats().size, dups.stats().size) == (4, 4)
