"""POST /v1/images: accepted uploads, dedupe and the retry paths."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db import ImageRecord, ImageStatus
from shared.errors import DependencyUnavailable
from shared.storage import original_key, thumbnail_key
from tests.unit.gateway.conftest import Gateway, assert_error, coco_jpegs, synthetic_jpeg


def test_upload_one_jpeg_is_accepted_pending_stored_and_enqueued(gateway: Gateway) -> None:
    path = coco_jpegs(1)[0]
    resp = gateway.upload([(path.name, path.read_bytes())])
    assert resp.status_code == 202, resp.text
    [item] = resp.json()["images"]
    assert item["filename"] == path.name
    assert item["duplicate"] is False
    assert item["status"] == "pending"
    assert item["status_url"] == f"/v1/images/{item['id']}"
    row = gateway.row(item["id"])
    assert row is not None
    assert (row.status, row.format, row.source) == ("pending", "JPEG", "upload")
    assert row.size_bytes == path.stat().st_size and row.width > 0 and row.height > 0
    assert gateway.context.store.get(original_key(row.sha256)) == path.read_bytes()
    assert gateway.context.store.exists(thumbnail_key(row.sha256))
    assert gateway.queue.ids == [item["id"]]


def test_upload_many_jpegs_stores_and_enqueues_each_in_order(gateway: Gateway) -> None:
    paths = coco_jpegs(3)
    resp = gateway.upload([(p.name, p.read_bytes()) for p in paths])
    assert resp.status_code == 202, resp.text
    items = resp.json()["images"]
    assert [i["filename"] for i in items] == [p.name for p in paths]
    assert len({i["id"] for i in items}) == 3
    assert gateway.row_count() == 3
    assert sorted(gateway.queue.ids) == sorted(i["id"] for i in items)
    assert len(gateway.blob_files()) == 6  # an original and a thumbnail each


def test_upload_records_the_source_field(gateway: Gateway) -> None:
    resp = gateway.upload([("a.jpg", synthetic_jpeg())], source="camera-roll")
    row = gateway.row(resp.json()["images"][0]["id"])
    assert row is not None and row.source == "camera-roll"


def test_reupload_returns_same_id_as_duplicate_without_enqueueing(gateway: Gateway) -> None:
    path = coco_jpegs(1)[0]
    first = gateway.upload([(path.name, path.read_bytes())]).json()["images"][0]
    resp = gateway.upload([("renamed.jpg", path.read_bytes())])
    assert resp.status_code == 202
    [again] = resp.json()["images"]
    assert again["id"] == first["id"]
    assert again["duplicate"] is True
    assert gateway.row_count() == 1
    assert gateway.queue.ids == [first["id"]]


def test_same_bytes_twice_in_one_request_store_one_image(gateway: Gateway) -> None:
    data = synthetic_jpeg()
    items = gateway.upload([("a.jpg", data), ("b.jpg", data)]).json()["images"]
    assert items[0]["id"] == items[1]["id"]
    assert [i["duplicate"] for i in items] == [False, True]
    assert gateway.row_count() == 1
    assert gateway.queue.ids == [items[0]["id"]]


def test_reupload_of_failed_image_resets_it_to_pending_and_reenqueues(gateway: Gateway) -> None:
    data = synthetic_jpeg()
    image_id = gateway.upload([("a.jpg", data)]).json()["images"][0]["id"]
    with gateway.session_factory.begin() as session:
        row = session.get(ImageRecord, image_id)
        row.status, row.error, row.attempts = ImageStatus.failed.value, "boom", 5
    [item] = gateway.upload([("a.jpg", data)]).json()["images"]
    assert (item["id"], item["duplicate"], item["status"]) == (image_id, True, "pending")
    row = gateway.row(image_id)
    assert row is not None and (row.status, row.error, row.attempts) == ("pending", None, 0)
    assert gateway.queue.ids == [image_id, image_id]


def test_queue_down_answers_503_and_marks_the_image_failed(gateway: Gateway) -> None:
    gateway.queue.error = DependencyUnavailable("redis is down")
    resp = gateway.upload([("a.jpg", synthetic_jpeg())])
    assert_error(resp, 503, "dependency_unavailable")
    with gateway.session_factory() as session:
        [row] = session.scalars(select(ImageRecord)).all()
    assert row.status == "failed" and "enqueue" in (row.error or "")


def test_reupload_after_queue_outage_enqueues_the_image(gateway: Gateway) -> None:
    data = synthetic_jpeg()
    gateway.queue.error = DependencyUnavailable("redis is down")
    gateway.upload([("a.jpg", data)])
    gateway.queue.error = None
    [item] = gateway.upload([("a.jpg", data)]).json()["images"]
    assert item["status"] == "pending"
    assert gateway.queue.ids == [item["id"]]



def test_filename_is_reduced_to_a_printable_base_name(gateway: Gateway) -> None:
    boundary = "capsearch-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"..\\..\\etc/evil\x01\x7fname.jpg\"\r\n\r\n").encode() + \
        synthetic_jpeg() + f"\r\n--{boundary}--\r\n".encode()
    resp = gateway.client.post(
        "/v1/images", content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code == 202, resp.text
    [item] = resp.json()["images"]
    assert item["filename"] == "evilname.jpg"
    row = gateway.row(item["id"])
    assert row is not None and row.filename == "evilname.jpg"


def test_a_request_with_two_bad_files_names_the_first_and_stores_nothing(gateway: Gateway
                                                                         ) -> None:
    """Files are checked several at a time; the error still names the first bad one in the
    request's order, whichever finished first, and nothing of the request is stored."""
    good = [(f"{i}.jpg", synthetic_jpeg(seed=i)) for i in range(6)]
    files = [good[0], ("broken.jpg", b"\xff\xd8 not really a jpeg"), *good[1:5],
             ("notes.txt", b"hello"), good[5]]
    message = assert_error(gateway.upload(files), 415, "invalid_image")
    assert message.startswith("broken.jpg: ")
    assert gateway.row_count() == 0 and gateway.blob_files() == []
    assert gateway.queue.ids == []


def test_many_files_are_stored_with_their_own_bytes(gateway: Gateway) -> None:
    """Concurrent checks keep every file with its own row and blobs."""
    files = [(f"{i}.jpg", synthetic_jpeg(seed=i)) for i in range(12)]
    resp = gateway.upload(files)
    assert resp.status_code == 202, resp.text
    items = resp.json()["images"]
    assert [i["filename"] for i in items] == [name for name, _ in files]
    for item, (_, data) in zip(items, files, strict=True):
        row = gateway.row(item["id"])
        assert row is not None and row.filename == item["filename"]
        assert gateway.context.store.get(original_key(row.sha256)) == data
    assert len(gateway.blob_files()) == 24


def test_in_order_keeps_order_bounds_concurrency_and_raises_the_first_failure() -> None:
    import anyio

    from services.gateway.uploads import in_order

    running = peak = 0

    async def work(position: int, delay: float) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(delay)
        running -= 1
        if position in (1, 3):
            raise ValueError(f"item {position}")
        return position * 10

    async def main() -> None:
        assert await in_order([0.02, 0.0, 0.01], lambda p, d: work(p + 10, d), 2) == [
            100, 110, 120]
        assert peak == 2
        # item 3 fails first (no delay), item 1 later: the error is item 1's
        try:
            await in_order([0.0, 0.03, 0.0, 0.0], work, 4)
        except ValueError as exc:
            assert str(exc) == "item 1"
        else:
            raise AssertionError("no error raised")
        # after a failure nothing more starts (one at a time: item 1 fails, 2 and 3 never run)
        started: list[int] = []

        async def track(position: int, delay: float) -> int:
            started.append(position)
            return await work(position, delay)

        try:
            await in_order([0.0, 0.0, 0.0, 0.0], track, 1)
        except ValueError as exc:
            assert str(exc) == "item 1"
        assert started == [0, 1]

    anyio.run(main)


def test_upload_concurrency_is_the_setting_else_the_usable_cores_up_to_4(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.devices as devices
    from services.gateway.uploads import upload_concurrency
    from shared.config import Settings

    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert upload_concurrency(Settings()) == 2
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(32)))
    assert upload_concurrency(Settings()) == 4
    assert upload_concurrency(Settings(upload_concurrency=9)) == 9
