"""The client's duplicate pages and photo search, and `capsearch duplicates` /
`capsearch search --similar-file` on top of them (gateway played by httpx.MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from capsearch import cli
from capsearch.client import CapsearchClient

PAGES = {None: {"groups": [{"ids": [1, 2], "score": 0.9}], "limit": 1, "next_cursor": "1"},
         "1": {"groups": [{"ids": [3, 4, 5], "score": 0.8}], "limit": 1, "next_cursor": None}}


def gateway(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/duplicates":
        return httpx.Response(200, json=PAGES[request.url.params.get("cursor")])
    if request.url.path == "/v1/search/similar":
        assert b'name="file"; filename="mine.jpg"' in request.content
        return httpx.Response(200, json={"image_id": None, "k": 2, "results": []})
    return httpx.Response(404, json={"error": {"code": "not_found", "message": "?"}})


def test_the_client_follows_duplicate_pages() -> None:
    with CapsearchClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        assert client.duplicates(limit=1).next_cursor == "1"
        assert [g.ids for g in client.all_duplicates(limit=1)] == [[1, 2], [3, 4, 5]]


def test_the_client_searches_by_a_local_photo(tmp_path: Path) -> None:
    photo = tmp_path / "mine.jpg"
    photo.write_bytes(b"\xff\xd8 photo bytes")
    with CapsearchClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        found = client.similar(path=photo, k=2)
    assert found.image_id is None and found.results == []


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    real = CapsearchClient.__init__

    def init(self: CapsearchClient, base_url: str, **kwargs: object) -> None:
        real(self, base_url, transport=httpx.MockTransport(gateway))  # type: ignore[arg-type]

    monkeypatch.setattr(CapsearchClient, "__init__", init)


def test_capsearch_duplicates_prints_every_group(mocked: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["duplicates", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"groups": [
        {"ids": [1, 2], "score": 0.9}, {"ids": [3, 4, 5], "score": 0.8}]}
    assert cli.main(["duplicates", "--limit", "1"]) == 0
    assert capsys.readouterr().out.split() == ["0.900", "1", "2"]


def test_capsearch_search_by_a_photo(mocked: None, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "mine.jpg"
    photo.write_bytes(b"\xff\xd8 photo bytes")
    assert cli.main(["search", "--similar-file", str(photo), "-k", "2"]) == 0
    assert "(no results)" in capsys.readouterr().out
