"""`capsearch search`: --sort taken and the capture-date filters reach the API; the capture
date is printed with each hit."""

from __future__ import annotations

import functools
import json
import os

import httpx
import pytest

from capsearch import client as client_module
from capsearch.cli import main
from capsearch.commands import search as search_command

HIT = {"id": 3, "score": 0.42, "caption": "a dog on a beach", "filename": "dog.jpg",
       "content_url": "/c", "thumbnail_url": "/t", "taken_at": "2019-07-14T16:05:00Z"}
UNDATED = HIT | {"id": 4, "filename": "cat.jpg", "caption": "a cat", "taken_at": None}


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The gateway's answers played by a transport; the requests the command sent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"query": "dog", "k": 10, "sort": "taken",
                                         "results": [HIT, UNDATED]})

    for name in [k for k in os.environ if k.startswith("CAPSEARCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(search_command, "CapsearchClient", functools.partial(
        client_module.CapsearchClient, transport=httpx.MockTransport(handler)))
    return seen


def test_search_sort_taken_with_capture_range(requests: list[httpx.Request],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "dog", "--sort", "taken", "--taken-from", "2019-01-01",
                 "--taken-to", "2019-12-31", "--url", "http://gw"]) == 0
    params = dict(requests[0].url.params)
    assert params == {"q": "dog", "k": "10", "sort": "taken", "taken_from": "2019-01-01",
                      "taken_to": "2019-12-31"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  1.  0.420  dog.jpg  taken 2019-07-14 16:05  — a dog on a beach"
    assert lines[1] == "  2.  0.420  cat.jpg  — a cat"


def test_search_json_carries_taken_at(requests: list[httpx.Request],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "dog", "--json", "--url", "http://gw"]) == 0
    assert "sort" not in dict(requests[0].url.params)  # the server's default
    body = json.loads(capsys.readouterr().out)
    assert [r["taken_at"] for r in body["results"]] == ["2019-07-14T16:05:00Z", None]


def test_an_unknown_sort_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        main(["search", "dog", "--sort", "size"])
