"""Near-duplicates and search by any photo on the real stack: the caption worker stores
duplicate vectors and groups over the search service's duplicate index (HTTP), the gateway
asks the worker for a query photo's vector over Celery/Redis; Postgres and S3 are real."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from capsearch.client import CapsearchClient
from tests.integration.conftest import RunningStack

pytestmark = pytest.mark.integration


def smaller_copy(path: Path, share: float = 0.6, quality: int = 70) -> bytes:
    """The acceptance edit: resized to 60 % and re-encoded at JPEG quality 70."""
    image = Image.open(path).convert("RGB")
    image = image.resize((round(image.width * share), round(image.height * share)),
                         Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(data_root: Path) -> list[Path]:
    # past the 40 photos test_stack_pipeline.py uploads: these groups are this module's own
    found = sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))[60:67]
    if len(found) < 7:
        pytest.skip("needs 67 coco-mini-val photos")
    return found


def test_a_resized_reencoded_copy_joins_its_originals_group(
        stack: RunningStack, photos: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy-60-q70.jpg"
    copy.write_bytes(smaller_copy(photos[0]))
    with CapsearchClient(stack.url) as client:
        originals = client.upload(photos[:6])
        client.wait_indexed([i.id for i in originals], timeout=600)
        [added] = client.upload([copy])  # a later batch: it joins, nothing is recomputed
        final = client.wait_indexed([added.id], timeout=600)
        assert final[added.id].status == "indexed"
        groups = [g.ids for g in client.all_duplicates(limit=2)]
        group = client._http.get(f"/v1/images/{added.id}/duplicates").json()
    ours = {i.id for i in originals} | {added.id}
    touching = [set(ids) & ours for ids in groups if set(ids) & ours]
    assert touching == [{originals[0].id, added.id}], groups  # distinct photos: no group
    assert group["ids"] == sorted([originals[0].id, added.id]) and group["score"] >= 0.775
    assert stack.count("duplicate_pairs") >= 1


def test_similar_by_a_photo_outside_the_collection_stores_nothing(
        stack: RunningStack, photos: list[Path], tmp_path: Path) -> None:
    with CapsearchClient(stack.url) as client:
        uploaded = client.upload(photos[:3])
        client.wait_indexed([i.id for i in uploaded], timeout=600)
        outside = tmp_path / "mirrored.jpg"  # bytes the collection has never seen
        ImageOps.mirror(Image.open(photos[6]).convert("RGB")).save(outside, quality=85)
        rows, keys = stack.count("images"), stack.object_keys()
        found = client.similar(path=outside, k=5, min_score=-1.0)
        assert found.image_id is None
        assert 1 <= len(found.results) <= 5
        scores = [r.score for r in found.results]
        assert scores == sorted(scores, reverse=True)
        assert stack.count("images") == rows and stack.object_keys() == keys
        by_id = client.similar(uploaded[0].id, k=3)  # the JSON form keeps working
        assert by_id.results[0].id == uploaded[0].id


def test_photo_queries_at_the_same_time_each_get_their_own_answer(
        stack: RunningStack, photos: list[Path], tmp_path: Path) -> None:
    """Several gateway threads wait on the result backend at once (one Redis pubsub)."""
    queries = []
    for n, path in enumerate(photos[3:6]):
        query = tmp_path / f"q{n}.jpg"
        ImageOps.flip(Image.open(path).convert("RGB")).save(query, quality=80)
        queries.append(query)
    with CapsearchClient(stack.url) as client:
        alone = [client.similar(path=q, k=3) for q in queries]
        with ThreadPoolExecutor(len(queries)) as pool:
            together = list(pool.map(lambda q: client.similar(path=q, k=3), queries))
    assert [[r.id for r in a.results] for a in alone] == [
        [r.id for r in t.results] for t in together]
