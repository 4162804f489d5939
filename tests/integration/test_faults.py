"""Fault injection with real processes: kill, cut and restart things during ingest and search.

A private stack (tests/support/faultstack.py): its own database, its own redis-server, and
Postgres and S3 reached by the gateway through proxies the tests cut, so the shared servers
and the session stack other tests use are never disturbed.
"""

from __future__ import annotations

import hashlib
import io
import random
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from PIL import Image

from capsearch.client import ApiError, CapsearchClient
from capsearch.commands.doctor import build_deps
from shared.consistency import examine
from shared.db import make_session_factory
from tests.integration.conftest import PG_ADMIN_URL
from tests.support.faultstack import FaultStack, build_fault_stack, same_ranking
from tests.support.s3server import S3Server

pytestmark = pytest.mark.integration

_seed = iter(range(10_000, 10**9))


def photo(side: int = 96) -> tuple[str, bytes]:
    """A new, unique JPEG (random blocks, so the captioner sees something image-like)."""
    seed = next(_seed)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=92)
    return f"p{seed}.jpg", out.getvalue()


def upload(client: CapsearchClient, files: list[tuple[str, bytes]], *,
           retry_for_s: float = 0.0) -> list[int]:
    """POST /v1/images; with retry_for_s, a 503 is retried as a well-behaved client does."""
    deadline = time.monotonic() + retry_for_s
    parts = [("files", (name, data, "image/jpeg")) for name, data in files]
    while True:
        try:
            resp = client._http.post("/v1/images", files=parts)
        except httpx.TransportError:
            resp = None
        if resp is not None and resp.status_code == 202:
            return [item["id"] for item in resp.json()["images"]]
        if time.monotonic() > deadline:
            raise AssertionError(f"upload failed: {resp.status_code if resp else 'no answer'}"
                                 f" {resp.text[:300] if resp else ''}")
        time.sleep(0.5)


def wait_indexed(stack: FaultStack, ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = stack.scalar("SELECT count(*) FROM images WHERE id = ANY(:ids) "
                            "AND status = 'indexed'", ids=ids)
        if done == len(set(ids)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{done}/{len(set(ids))} indexed after {timeout}s; "
                                 f"statuses {stack.statuses()}")
        time.sleep(0.5)


def assert_exactly_once(stack: FaultStack, ids: list[int]) -> None:
    """Each image: one row, indexed, one caption vector; the index holds each id once."""
    assert stack.scalar("SELECT count(*) FROM images WHERE id = ANY(:ids)", ids=ids) == len(ids)
    # one row per image of each kind stored (fused: the served and the image vector; `dup`)
    kinds = stack.scalar("SELECT count(DISTINCT kind) FROM embeddings WHERE image_id = ANY(:ids)",
                         ids=ids)
    assert stack.scalar("SELECT count(*) FROM embeddings WHERE image_id = ANY(:ids)",
                        ids=ids) == len(ids) * kinds
    assert stack.scalar("SELECT count(DISTINCT sha256) FROM images") == \
        stack.scalar("SELECT count(*) FROM images")
    indexed = stack.scalar("SELECT count(*) FROM images WHERE status = 'indexed'")
    assert stack.index_stats()["size"] == indexed


@pytest.fixture(scope="module")
def faults(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[FaultStack]:
    stack = build_fault_stack(pg_admin_url=PG_ADMIN_URL, s3=s3_server,
                              work_dir=tmp_path_factory.mktemp("faults"))
    yield stack
    stack.close()


@pytest.fixture
def client(faults: FaultStack) -> Iterator[CapsearchClient]:
    with faults.client() as c:
        yield c


def test_worker_sigkilled_mid_batch_repeatedly_indexes_everything_once(
        faults: FaultStack, client: CapsearchClient) -> None:
    ids: list[int] = []
    for _ in range(5):
        ids += upload(client, [photo() for _ in range(4)])
    kills = 0
    rng = random.Random(7)
    while kills < 3:
        # a batch the worker has not started yet (a fast worker may have finished the others)
        offset = faults.worker_log_size()
        ids += upload(client, [photo() for _ in range(8)])
        deadline = time.monotonic() + 60
        while "caption_images start" not in faults.worker_log_since(offset):
            assert time.monotonic() < deadline, "the worker never started a batch"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        faults.restart("caption", signal.SIGKILL)
        kills += 1
    ids += upload(client, [photo() for _ in range(4)])
    wait_indexed(faults, ids, timeout=240)
    assert_exactly_once(faults, ids)


def test_redis_restart_during_ingest_loses_nothing(faults: FaultStack,
                                                  client: CapsearchClient) -> None:
    acked: list[int] = []
    for i in range(12):
        if i == 4:
            faults.redis.restart(down_s=1.0)  # the queue and every task in it are gone
        acked += upload(client, [photo()], retry_for_s=60)
    wait_indexed(faults, acked, timeout=180)
    assert_exactly_once(faults, acked)


def test_encoder_down_search_503_and_ingest_retries_later(faults: FaultStack,
                                                         client: CapsearchClient) -> None:
    offset = faults.worker_log_size()
    faults.kill("encoder")
    try:
        with pytest.raises(ApiError) as err:
            client.search("a photo")
        assert err.value.status == 503 and err.value.code == "dependency_unavailable"
        ids = upload(client, [photo(), photo()])
        deadline = time.monotonic() + 60
        while "retrying" not in faults.worker_log_since(offset):  # the batch failed, will retry
            assert time.monotonic() < deadline, "the worker never retried"
            time.sleep(0.2)
        assert faults.scalar("SELECT count(*) FROM images WHERE id = ANY(:ids) AND "
                             "status = 'indexed'", ids=ids) == 0
    finally:
        faults.start("encoder")
    wait_indexed(faults, ids, timeout=240)
    assert client.search("a photo").results


def test_search_restart_reloads_the_index_and_answers_the_same(
        faults: FaultStack, client: CapsearchClient) -> None:
    before = client.search("a colourful photo", k=20)
    faults.restart("search", signal.SIGTERM)
    after = client.search("a colourful photo", k=20)
    assert len(after.results) == len(before.results) > 0
    assert same_ranking([(r.id, r.score) for r in before.results],
                        [(r.id, r.score) for r in after.results])


def test_s3_dying_mid_upload_is_503_and_leaves_nothing_half_written(
        faults: FaultStack, client: CapsearchClient) -> None:
    rows = faults.scalar("SELECT count(*) FROM images")
    files = [photo(side=256) for _ in range(4)]
    faults.s3_proxy.cut_after_bytes = 30_000  # S3 dies while the first files are sent
    try:
        with pytest.raises(AssertionError, match="503"):
            upload(client, files)
    finally:
        deadline = time.monotonic() + 10
        while not faults.s3_proxy.is_cut and time.monotonic() < deadline:
            time.sleep(0.05)
        faults.s3_proxy.cut_after_bytes = None
        if faults.s3_proxy.is_cut:
            faults.s3_proxy.restore()
    assert faults.scalar("SELECT count(*) FROM images") == rows  # no row was committed
    shas = {hashlib.sha256(data).hexdigest() for _, data in files}
    from minio import Minio

    s3 = Minio(faults.s3.endpoint, access_key=faults.s3.access_key,
               secret_key=faults.s3.secret_key, secure=False)
    for key in faults.object_keys():
        if key.startswith("originals/") and key.rsplit("/", 1)[-1] in shas:
            body = s3.get_object(faults.bucket, key).read()  # any blob that exists is whole
            assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[-1]
    settings = faults.settings.model_copy(update={"s3": faults.settings.s3.model_copy(
        update={"endpoint": faults.s3.endpoint})})
    with ExitStack() as stack:
        deps = build_deps(settings, make_session_factory(faults.engine), stack)
        examine(deps, repair=True, grace_s=0, stuck_after_s=3600)
        report = examine(deps, repair=False, grace_s=0, stuck_after_s=3600)
    assert report.problems == 0, report.as_dict()
    assert upload(client, files)  # S3 back: the same files go through


def test_postgres_down_is_503_and_the_gateway_recovers_by_itself(
        faults: FaultStack, client: CapsearchClient) -> None:
    some_id = faults.scalar("SELECT min(id) FROM images")
    faults.pg_proxy.cut()
    try:
        with pytest.raises(ApiError) as err:
            client.image(some_id)
        assert err.value.status == 503 and "database" in err.value.code
        with pytest.raises(AssertionError, match="503"):
            upload(client, [photo()])
        ready = client._http.get("/readyz")
        assert ready.status_code == 503 and "database" in ready.json()["error"]["message"]
    finally:
        faults.pg_proxy.restore()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.image(some_id).id == some_id
            break
        except ApiError:
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.5)


def test_gateway_starts_while_postgres_is_down_and_serves_once_it_is_back(
        faults: FaultStack) -> None:
    faults.kill("gateway")
    faults.pg_proxy.cut()
    try:
        proc = faults.start("gateway", wait=False)
        with faults.client(timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                assert proc.alive(), proc.log_path.read_text()[-2000:]
                try:
                    if client._http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.3)
            some = f"/v1/images/{faults.scalar('SELECT min(id) FROM images')}"
            resp = client._http.get(some)
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "database_unavailable"
            faults.pg_proxy.restore()
            deadline = time.monotonic() + 60
            while client._http.get(some).status_code != 200:
                assert time.monotonic() < deadline, "the gateway did not recover"
                time.sleep(0.5)
    finally:
        if faults.pg_proxy.is_cut:
            faults.pg_proxy.restore()
