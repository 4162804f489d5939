"""GET /v1/search: encode, search, filter, hydrate in rank order; validation; dependency errors."""

from __future__ import annotations

import httpx
import pytest

from shared.db import Caption, ImageRecord
from tests.unit.gateway.conftest import Gateway, assert_error


def seed_images(gateway: Gateway, captions: dict[str, str | None]) -> dict[str, int]:
    """Rows (no blobs needed) with an optional caption each; filename -> id."""
    ids = {}
    with gateway.session_factory.begin() as session:
        for n, (filename, caption) in enumerate(captions.items()):
            row = ImageRecord(sha256=f"{n:064x}", filename=filename, format="JPEG", width=4,
                              height=4, size_bytes=10, status="indexed")
            session.add(row)
            session.flush()
            ids[filename] = row.id
            if caption is not None:
                session.add(Caption(image_id=row.id, text=caption, model="tags"))
    return ids


@pytest.fixture
def seeded(gateway: Gateway) -> dict[str, int]:
    ids = seed_images(gateway, {"dog.jpg": "a dog on a beach", "cat.jpg": "a cat on a sofa",
                                "car.jpg": "a red car", "new.jpg": None})
    gateway.backends.hits = [(ids["cat.jpg"], 0.9), (ids["dog.jpg"], 0.7), (9999, 0.6),
                             (ids["new.jpg"], 0.4), (ids["car.jpg"], 0.1)]
    return ids


def test_search_hydrates_captions_in_rank_order(gateway: Gateway,
                                                seeded: dict[str, int]) -> None:
    resp = gateway.client.get("/v1/search", params={"q": "  a pet  ", "k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["query"] == "a pet" and body["k"] == 5
    assert [r["filename"] for r in body["results"]] == ["cat.jpg", "dog.jpg", "new.jpg",
                                                         "car.jpg"]  # 9999 vanished
    first = body["results"][0]
    assert (first["width"], first["height"], first["size_bytes"], first["source"]) == (
        4, 4, 10, "upload")  # metadata for display, sorting and filtering
    shown = {k: v for k, v in first.items()
             if k not in {"width", "height", "size_bytes", "source", "created_at"}}
    assert shown == {"id": seeded["cat.jpg"], "score": 0.9, "caption": "a cat on a sofa",
                     "filename": "cat.jpg",
                     "content_url": f"/v1/images/{seeded['cat.jpg']}/content",
                     "thumbnail_url": f"/v1/images/{seeded['cat.jpg']}/thumbnail",
                     "taken_at": None}  # every hit carries its capture date, null when none
    assert body["results"][2]["caption"] is None
    assert gateway.backends.encoded == [["a pet"]]


def test_search_applies_min_score(gateway: Gateway, seeded: dict[str, int]) -> None:
    body = gateway.client.get("/v1/search", params={"q": "pet", "min_score": 0.5}).json()
    assert [r["id"] for r in body["results"]] == [seeded["cat.jpg"], seeded["dog.jpg"]]


def test_search_passes_k_and_nprobe_to_the_index(gateway: Gateway,
                                                 seeded: dict[str, int]) -> None:
    gateway.client.get("/v1/search", params={"q": "pet", "k": 2, "nprobe": 3})
    [sent] = gateway.backends.searches
    assert (sent["k"], sent["nprobe"], len(sent["vector"])) == (2, 3, 4)


def test_search_passes_partial_and_index_version_through(gateway: Gateway,
                                                          seeded: dict[str, int]) -> None:
    gateway.backends.partial, gateway.backends.index_version = True, 7
    body = gateway.client.get("/v1/search", params={"q": "pet"}).json()
    assert (body["partial"], body["index_version"]) == (True, 7)


@pytest.mark.parametrize("params", [
    {"q": ""}, {"q": "   "}, {"q": "x" * 513}, {"q": "dog", "k": 0}, {"q": "dog", "k": 101},
    {"q": "dog", "min_score": 1.5}, {"q": "dog", "min_score": "nan"}, {"q": "dog", "nprobe": 0},
    {},
], ids=["empty", "blank", "too-long", "k-zero", "k-too-big", "min-score", "min-score-nan",
        "nprobe", "no-q"])
def test_invalid_search_is_422_json(gateway: Gateway, params: dict[str, object]) -> None:
    assert_error(gateway.client.get("/v1/search", params=params), 422, "validation_error")
    assert gateway.backends.encoded == []


def test_encoder_down_is_503_json(gateway: Gateway) -> None:
    gateway.backends.encoder_error = httpx.ConnectError("connection refused")
    assert_error(gateway.client.get("/v1/search", params={"q": "dog"}), 503,
                 "dependency_unavailable")


def test_encoder_timeout_is_504_json(gateway: Gateway) -> None:
    gateway.backends.encoder_error = httpx.ReadTimeout("too slow")
    assert_error(gateway.client.get("/v1/search", params={"q": "dog"}), 504,
                 "dependency_timeout")


def test_search_service_500_is_502_json(gateway: Gateway) -> None:
    gateway.backends.search_status = 500
    assert_error(gateway.client.get("/v1/search", params={"q": "dog"}), 502,
                 "dependency_error")


def test_rebuild_starts_in_the_background_and_reports_its_status(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/index/rebuild")
    status = gateway.client.get("/v1/index/rebuild")
    assert resp.status_code == 202 and resp.json()["state"] == "building"
    assert status.status_code == 200 and status.json()["result"]["index_version"] == 4
    assert gateway.backends.rebuilds == 1


def test_search_shows_the_latest_caption_of_an_image_with_several(gateway: Gateway) -> None:
    from datetime import UTC, datetime, timedelta

    ids = seed_images(gateway, {"dog.jpg": "an old caption"})
    later = datetime.now(UTC) + timedelta(seconds=5)
    with gateway.session_factory.begin() as session:
        session.add(Caption(image_id=ids["dog.jpg"], text="the newer caption", model="other",
                            created_at=later))
    gateway.backends.hits = [(ids["dog.jpg"], 0.8)]
    body = gateway.client.get("/v1/search", params={"q": "dog"}).json()
    assert [r["caption"] for r in body["results"]] == ["the newer caption"]


def test_a_repeated_query_reuses_the_cached_vector(gateway: Gateway,
                                                   seeded: dict[str, int]) -> None:
    from services.gateway.querycache import CachedTextEncoder

    gateway.context.encoder = CachedTextEncoder(gateway.context.encoder, model="fake")
    first = gateway.client.get("/v1/search", params={"q": "a pet", "k": 5}).json()
    second = gateway.client.get("/v1/search", params={"q": " a  pet ", "k": 5}).json()
    assert gateway.backends.encoded == [["a pet"]]  # the second one never reached the encoder
    assert first["results"] == second["results"]
    assert gateway.backends.searches[0]["vector"] == gateway.backends.searches[1]["vector"]
