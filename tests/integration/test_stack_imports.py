"""POST /v1/imports of a bucket prefix against the running stack (real S3, Celery, Postgres)."""

from __future__ import annotations

import io

import httpx
import pytest

from capsearch.client import ApiError, CapsearchClient
from tests.integration.conftest import RunningStack
from tests.unit.gateway.conftest import synthetic_jpeg

pytestmark = pytest.mark.integration


def test_bucket_prefix_import_indexes_its_photos(stack: RunningStack) -> None:
    s3 = stack.minio()
    bucket = stack.settings.s3.bucket
    for name in ("one.jpg", "two.jpg"):
        data = synthetic_jpeg((80, 60), seed=11)
        s3.put_object(bucket, f"incoming/import-it/{name}", io.BytesIO(data), len(data),
                      content_type="image/jpeg")
    s3.put_object(bucket, "incoming/import-it/readme.txt", io.BytesIO(b"hi"), 2)

    with CapsearchClient(stack.url) as client:
        job = client.start_import(prefix="incoming/import-it/")
        assert job.kind == "s3" and job.location == f"s3://{bucket}/incoming/import-it/"
        done = client.wait_import(job.id, timeout=120)
        assert (done.status, done.total, done.added, done.failed) == ("done", 2, 2, 0), done
        listed = client.images(source=f"s3://{bucket}/incoming/import-it", limit=10).images
        assert sorted(i.filename for i in listed) == ["one.jpg", "two.jpg"]
        final = client.wait_indexed([i.id for i in listed], timeout=300)
        assert {r.status for r in final.values()} == {"indexed"}


def test_prefix_outside_the_allowed_ones_is_refused(stack: RunningStack) -> None:
    with CapsearchClient(stack.url) as client:
        for prefix in ("originals/", "incoming/../originals/"):
            with pytest.raises(ApiError) as refused:
                client.start_import(prefix=prefix)
            assert refused.value.status in (403, 422)
    with httpx.Client(base_url=stack.url, timeout=30) as http:  # and never without a key
        assert http.post("/v1/imports", json={"prefix": "incoming/"}).status_code == 401
