"""GET /v1/duplicates (paged groups), a photo's group, and the UI page that reviews a group
and deletes its extras (cross-site guard, session with the write scope)."""

from __future__ import annotations

import pytest

from shared.apikeys import create_key
from shared.db.duplicates import record_pairs
from tests.unit.gateway.collection import Photo, seed, unit
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error


def grouped(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [Photo(f"{name}.jpg", name, vector=unit(1))
                         for name in ("a", "a-copy", "b", "b-copy", "b-crop", "c")])
    with gateway.session_factory.begin() as session:
        record_pairs(session, [(ids["a.jpg"], ids["a-copy.jpg"], 0.93),
                               (ids["b.jpg"], ids["b-copy.jpg"], 0.91),
                               (ids["b-crop.jpg"], ids["b.jpg"], 0.84)])
    return ids


@pytest.fixture
def ids(gateway: Gateway) -> dict[str, int]:
    return grouped(gateway)


def test_groups_list_ids_and_the_weakest_link(gateway: Gateway, ids: dict[str, int]) -> None:
    resp = gateway.client.get("/v1/duplicates")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["groups"] == [
        {"ids": [ids["a.jpg"], ids["a-copy.jpg"]], "score": pytest.approx(0.93)},
        {"ids": [ids["b.jpg"], ids["b-copy.jpg"], ids["b-crop.jpg"]],
         "score": pytest.approx(0.84)}]
    assert body["next_cursor"] is None  # the lone photo c is in no group


def test_groups_come_a_page_at_a_time(gateway: Gateway, ids: dict[str, int]) -> None:
    first = gateway.client.get("/v1/duplicates", params={"limit": 1}).json()
    assert [g["ids"][0] for g in first["groups"]] == [ids["a.jpg"]]
    assert first["next_cursor"]
    second = gateway.client.get("/v1/duplicates", params={
        "limit": 1, "cursor": first["next_cursor"]}).json()
    assert [g["ids"][0] for g in second["groups"]] == [ids["b.jpg"]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": "abc"},
                                    {"cursor": "-1"}], ids=str)
def test_bad_paging_is_422(gateway: Gateway, params: dict[str, object]) -> None:
    assert_error(gateway.client.get("/v1/duplicates", params=params), 422)


def test_a_photos_group_and_a_photo_without_one(gateway: Gateway, ids: dict[str, int]) -> None:
    body = gateway.client.get(f"/v1/images/{ids['b-crop.jpg']}/duplicates").json()
    assert body["ids"] == [ids["b.jpg"], ids["b-copy.jpg"], ids["b-crop.jpg"]]
    assert_error(gateway.client.get(f"/v1/images/{ids['c.jpg']}/duplicates"), 404,
                 "no_duplicates")


def test_deleting_through_the_api_leaves_the_group(gateway: Gateway, ids: dict[str, int]
                                                   ) -> None:
    assert gateway.client.delete(f"/v1/images/{ids['a-copy.jpg']}").status_code == 204
    groups = gateway.client.get("/v1/duplicates").json()["groups"]
    assert [g["ids"][0] for g in groups] == [ids["b.jpg"]]


def test_the_page_shows_each_group_side_by_side(gateway: Gateway, ids: dict[str, int]) -> None:
    page = gateway.client.get("/duplicates")
    assert page.status_code == 200
    assert page.text.count('class="duplicate-group"') == 2
    for name in ("a.jpg", "a-copy.jpg", "b-crop.jpg"):
        assert f'/v1/images/{ids[name]}/thumbnail' in page.text
    assert f'/v1/images/{ids["c.jpg"]}/thumbnail' not in page.text


def test_the_form_deletes_the_ticked_extras(gateway: Gateway, ids: dict[str, int]) -> None:
    resp = gateway.client.post("/duplicates/delete", data={
        "group": str(ids["b.jpg"]), "delete": [str(ids["b-copy.jpg"]), str(ids["b-crop.jpg"])]},
        follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, "/duplicates?deleted=2")
    assert gateway.row(ids["b-copy.jpg"]) is None and gateway.row(ids["b-crop.jpg"]) is None
    assert gateway.row(ids["b.jpg"]) is not None
    assert sorted(gateway.backends.removed) == sorted([ids["b-copy.jpg"], ids["b-crop.jpg"]])
    assert "2 photos deleted" in gateway.client.get("/duplicates?deleted=2").text


@pytest.mark.parametrize("which", [("a.jpg", "a-copy.jpg"), ("c.jpg",)], ids=["all", "other"])
def test_the_form_keeps_one_photo_and_stays_in_the_group(gateway: Gateway, ids: dict[str, int],
                                                         which: tuple[str, ...]) -> None:
    resp = gateway.client.post("/duplicates/delete", data={
        "group": str(ids["a.jpg"]), "delete": [str(ids[n]) for n in which]})
    assert resp.status_code == 422
    assert all(gateway.row(ids[n]) is not None for n in which)


def test_the_form_without_a_choice_is_422(gateway: Gateway, ids: dict[str, int]) -> None:
    resp = gateway.client.post("/duplicates/delete", data={"group": str(ids["a.jpg"])})
    assert_error(resp, 422)


def test_a_cross_site_delete_is_refused(gateway: Gateway, ids: dict[str, int]) -> None:
    resp = gateway.client.post("/duplicates/delete", headers={"Sec-Fetch-Site": "cross-site"},
                               data={"group": str(ids["a.jpg"]),
                                     "delete": [str(ids["a-copy.jpg"])]})
    assert_error(resp, 403, "cross_site_request")
    assert gateway.row(ids["a-copy.jpg"]) is not None


def test_deleting_needs_a_session_with_the_write_scope(make_gateway: GatewayFactory) -> None:
    secured = make_gateway(auth={"enabled": True, "cache_s": 0})
    ids = grouped(secured)
    form = {"group": str(ids["a.jpg"]), "delete": [str(ids["a-copy.jpg"])]}
    assert_error(secured.client.post("/duplicates/delete", data=form), 401)
    for scopes in (("search",), ("search", "write")):
        key = create_key(secured.session_factory, name="browser", scopes=scopes).key
        signed = secured.client.post("/sign-in", data={"api_key": key, "next": "/duplicates"},
                                     follow_redirects=False)
        assert signed.status_code == 303
        assert secured.client.get("/duplicates").status_code == 200
        resp = secured.client.post("/duplicates/delete", data=form, follow_redirects=False)
        if scopes == ("search",):
            assert_error(resp, 403, "forbidden")
            assert secured.row(ids["a-copy.jpg"]) is not None
        else:
            assert resp.status_code == 303
            assert secured.row(ids["a-copy.jpg"]) is None
