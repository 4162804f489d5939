"""Text read in photos through the gateway: fused into search by default, shown in the image
record (API and UI), deleted with the image."""

from __future__ import annotations

import pytest

from shared.db import ImageText
from shared.db.fulltext import photo_text_document
from tests.unit.gateway.collection import Photo, seed, unit
from tests.unit.gateway.conftest import Gateway


def read_text(gateway: Gateway, texts: dict[int, str]) -> None:
    with gateway.session_factory.begin() as session:
        session.add_all([ImageText(image_id=i, model="pp-ocrv4", text=t,
                                   confidence=0.93 if t else None,
                                   words=photo_text_document(t)) for i, t in texts.items()])


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [Photo("beach.jpg", "a beach"), Photo("street.jpg", "a street"),
                         Photo("station.jpg", "a train in a station"),
                         Photo("cafe.jpg", "a cafe")])
    read_text(gateway, {ids["station.jpg"]: "PLATFORM 9\nKINGS CROSS",
                        ids["cafe.jpg"]: "CAFE\nOPEN 9 TO 5", ids["beach.jpg"]: ""})
    # the vector ranking knows nothing of the sign: the station comes third
    gateway.backends.hits = [(ids["beach.jpg"], 0.9), (ids["street.jpg"], 0.8),
                             (ids["station.jpg"], 0.5), (ids["cafe.jpg"], 0.4)]
    return ids


def search(gateway: Gateway, q: str, **params: object) -> list[str]:
    resp = gateway.client.get("/v1/search", params={"q": q, **params})
    assert resp.status_code == 200, resp.text
    return [r["filename"] for r in resp.json()["results"]]


def test_the_words_on_a_sign_bring_its_photo_first(gateway: Gateway,
                                                   photos: dict[str, int]) -> None:
    assert search(gateway, "platform 9 kings cross")[0] == "station.jpg"
    assert search(gateway, "kingscross")[0] == "station.jpg"  # written together
    # a query sharing one word with the sign is not a match: the vector order stands
    assert search(gateway, "platform 4") == ["beach.jpg", "street.jpg", "station.jpg",
                                             "cafe.jpg"]


def test_a_photo_only_its_text_found_is_fused_in_with_its_cosine_score(
        gateway: Gateway) -> None:
    ids = seed(gateway, [Photo("a.jpg", "a horse"), Photo("b.jpg", "a shop",
                                                          vector=unit(0.6, 0.8))])
    read_text(gateway, {ids["b.jpg"]: "BAKERY"})
    gateway.backends.hits = [(ids["a.jpg"], 0.8)]  # the index missed b
    body = gateway.client.get("/v1/search", params={"q": "bakery"}).json()
    assert [(r["filename"], r["score"]) for r in body["results"]] == [
        ("b.jpg", pytest.approx(0.6)), ("a.jpg", 0.8)]  # text leads; score stays the cosine


def test_a_text_match_asks_the_index_for_the_fusion_depth(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    search(gateway, "a beach", k=2)  # no photo says "beach": a plain query, exactly k
    search(gateway, "kings cross", k=2)
    assert [s["k"] for s in gateway.backends.searches] == [
        2, gateway.settings.ranking.depth]


def test_ocr_weight_zero_turns_the_fusion_off(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(ranking={"ocr_weight": 0})
    ids = seed(gateway, [Photo("a.jpg", "a dog"), Photo("b.jpg", "a shop")])
    read_text(gateway, {ids["b.jpg"]: "BAKERY"})
    gateway.backends.hits = [(ids["a.jpg"], 0.9), (ids["b.jpg"], 0.3)]
    assert search(gateway, "bakery") == ["a.jpg", "b.jpg"]


def test_the_image_record_shows_the_text_read_in_it(gateway: Gateway,
                                                    photos: dict[str, int]) -> None:
    station = gateway.client.get(f"/v1/images/{photos['station.jpg']}").json()
    assert station["ocr_text"] == "PLATFORM 9\nKINGS CROSS"
    assert station["ocr_confidence"] == pytest.approx(0.93)
    beach = gateway.client.get(f"/v1/images/{photos['beach.jpg']}").json()
    assert (beach["ocr_text"], beach["ocr_confidence"]) == ("", None)  # read: none found
    street = gateway.client.get(f"/v1/images/{photos['street.jpg']}").json()
    assert street["ocr_text"] is None  # not read yet
    listed = gateway.client.get("/v1/images").json()["images"]
    assert {i["filename"]: i["ocr_text"] for i in listed}["station.jpg"] == (
        "PLATFORM 9\nKINGS CROSS")
    looked_up = gateway.client.post("/v1/images/lookup",
                                    json={"ids": [photos["cafe.jpg"]]}).json()
    assert looked_up["images"][0]["ocr_text"] == "CAFE\nOPEN 9 TO 5"


def test_the_photo_page_shows_its_text(gateway: Gateway, photos: dict[str, int]) -> None:
    page = gateway.client.get(f"/images/{photos['station.jpg']}")
    assert page.status_code == 200
    assert "Text in the photo" in page.text and "PLATFORM 9\nKINGS CROSS" in page.text
    assert "Not read yet" in gateway.client.get(f"/images/{photos['street.jpg']}").text
    assert "No text found" in gateway.client.get(f"/images/{photos['beach.jpg']}").text


def test_deleting_an_image_deletes_its_text(gateway: Gateway, photos: dict[str, int]) -> None:
    assert gateway.client.delete(f"/v1/images/{photos['station.jpg']}").status_code == 204
    with gateway.session_factory() as session:
        assert session.get(ImageText, photos["station.jpg"]) is None
    assert search(gateway, "kings cross")[0] == "beach.jpg"
