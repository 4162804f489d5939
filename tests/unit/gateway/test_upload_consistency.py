"""POST /v1/images under races and failures: no orphan blob, no lost duplicate."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from services.gateway import uploads
from tests.unit.gateway.conftest import Gateway, assert_error, synthetic_jpeg


def miss_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if another upload of the same bytes committed between our lookup and our insert."""
    real = uploads.find_existing
    calls = []

    def lookup(factory: Any, shas: Any) -> Any:
        calls.append(shas)
        return {} if len(calls) == 1 else real(factory, shas)

    monkeypatch.setattr(uploads, "find_existing", lookup)


def test_row_insert_failure_deletes_the_new_blobs(gateway: Gateway,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_insert(*_: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(uploads, "insert_rows", broken_insert)
    assert_error(gateway.upload([("a.jpg", synthetic_jpeg())]), 503, "database_unavailable")
    assert gateway.blob_files() == []
    assert gateway.queue.ids == []


def test_blob_store_failure_stores_no_row(gateway: Gateway,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import DependencyUnavailable

    def broken_put(*_: object, **__: object) -> None:
        raise DependencyUnavailable("S3 put failed")

    monkeypatch.setattr(gateway.context.store, "put", broken_put)
    assert_error(gateway.upload([("a.jpg", synthetic_jpeg())]), 503, "dependency_unavailable")
    assert gateway.row_count() == 0


def test_losing_a_sha256_race_answers_duplicate_and_keeps_the_blobs(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_jpeg()
    winner = gateway.upload([("a.jpg", data)]).json()["images"][0]["id"]
    miss_first_lookup(monkeypatch)
    [item] = gateway.upload([("b.jpg", data)]).json()["images"]
    assert (item["id"], item["duplicate"]) == (winner, True)
    assert gateway.row_count() == 1
    assert len(gateway.blob_files()) == 2
    assert gateway.queue.ids == [winner]


def test_race_in_a_batch_still_inserts_the_other_new_images(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    raced = synthetic_jpeg(seed=1)
    winner = gateway.upload([("a.jpg", raced)]).json()["images"][0]["id"]
    miss_first_lookup(monkeypatch)
    items = gateway.upload([("a.jpg", raced), ("b.jpg", synthetic_jpeg(seed=2))]).json()["images"]
    assert [(i["id"] == winner, i["duplicate"]) for i in items] == [(True, True), (False, False)]
    assert gateway.row_count() == 2
    assert gateway.queue.ids == [winner, items[1]["id"]]
