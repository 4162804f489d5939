"""GET /v1/images with the search filters, and GET /v1/sources for the folder menu."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.gateway.collection import Photo, seed
from tests.unit.gateway.conftest import Gateway, assert_error


def test_list_images_takes_the_search_filters(gateway: Gateway) -> None:
    seed(gateway, [
        Photo("a.jpg", source="/p/a", created=datetime(2024, 1, 1, tzinfo=UTC)),
        Photo("b.jpg", source="/p/a/sub", created=datetime(2024, 2, 1, tzinfo=UTC),
              width=4000, height=3000),
        Photo("c.jpg", source="/p/b", created=datetime(2024, 3, 1, tzinfo=UTC),
              status="pending"),
    ])

    def listed(**params: object) -> list[str]:
        resp = gateway.client.get("/v1/images", params=params)
        assert resp.status_code == 200, resp.text
        return [i["filename"] for i in resp.json()["images"]]

    assert listed(source="/p/a") == ["b.jpg", "a.jpg"]
    assert listed(date_from="2024-01-15") == ["c.jpg", "b.jpg"]
    assert listed(date_to="2024-02-01") == ["b.jpg", "a.jpg"]
    assert listed(min_megapixels=10) == ["b.jpg"]
    assert listed(status="pending", source="/p") == ["c.jpg"]
    assert gateway.client.get("/v1/images", params={"source": "/p/a"}).json()["total"] == 2


def test_list_images_refuses_an_upside_down_range(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/images", params={"date_from": "2024-02-01",
                                                    "date_to": "2024-01-01"})
    assert_error(resp, 422, "validation_error")


def test_sources_lists_folders_with_counts(gateway: Gateway) -> None:
    seed(gateway, [Photo("a.jpg", source="/p/b"), Photo("b.jpg", source="/p/a"),
                   Photo("c.jpg", source="/p/b")])
    resp = gateway.client.get("/v1/sources")
    assert resp.status_code == 200
    assert resp.json() == [{"source": "/p/a", "images": 1}, {"source": "/p/b", "images": 2}]


def test_source_filter_treats_like_wildcards_literally(gateway: Gateway) -> None:
    seed(gateway, [Photo("a.jpg", source="/p/100%_done"), Photo("b.jpg", source="/p/100x_done")])
    resp = gateway.client.get("/v1/images", params={"source": "/p/100%_done"})
    assert [i["filename"] for i in resp.json()["images"]] == ["a.jpg"]
