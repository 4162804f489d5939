"""The pipeline's near-duplicate stage and the query-photo path, with the real CNN: a copy
(60 %, JPEG q70) joins its original's group in a later batch; distinct photos stay apart;
a photo's query vector is the vector ingest serves for it."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.caption.backfill import backfill_duplicates
from services.caption.example import embed_photo
from services.caption.pipeline import PipelineDeps, caption_images
from services.search.service import IndexService
from shared.config import Settings
from shared.db import Embedding, EmbeddingKind
from shared.db.duplicates import group_page
from shared.db.queries import load_vectors
from shared.duplicates import duplicate_vector_model
from shared.errors import CapsearchError
from shared.storage import LocalBlobStore
from tests.unit.caption.conftest import add_image

pytestmark = pytest.mark.slow


def smaller_copy(data: bytes, share: float = 0.6, quality: int = 70) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((round(image.width * share), round(image.height * share)),
                         Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture
def dup_deps(deps: PipelineDeps, settings: Settings,
             session_factory: sessionmaker[Session]) -> PipelineDeps:
    index = IndexService(settings, session_factory, kind=EmbeddingKind.dup,
                         model=duplicate_vector_model(settings))
    index.load()
    return dataclasses.replace(deps, duplicates=index)


def groups(factory: sessionmaker[Session]) -> list[tuple[int, ...]]:
    with factory() as session:
        return [g.ids for g in group_page(session, after=0, limit=50).groups]


def test_a_resized_reencoded_copy_joins_its_original_in_a_later_batch(
        dup_deps: PipelineDeps, store: LocalBlobStore, coco_images: list[Path]) -> None:
    factory = dup_deps.session_factory
    originals = [add_image(factory, store, p.read_bytes(), name=p.name)
                 for p in coco_images[:4]]
    caption_images(originals, deps=dup_deps)
    assert groups(factory) == []  # four distinct photos: no group
    copy = add_image(factory, store, smaller_copy(coco_images[1].read_bytes()),
                     name="copy.jpg")
    report = caption_images([copy], deps=dup_deps)
    assert report.indexed == [copy]
    assert groups(factory) == [(originals[1], copy)]
    with factory() as session:
        kinds = session.execute(select(Embedding.kind, Embedding.model, Embedding.dim)
                                .where(Embedding.image_id == copy)).tuples().all()
    assert (EmbeddingKind.dup.value, duplicate_vector_model(dup_deps.settings), 1280) in kinds


def test_a_batch_holding_both_copies_groups_them(dup_deps: PipelineDeps,
                                                 store: LocalBlobStore,
                                                 coco_images: list[Path]) -> None:
    factory = dup_deps.session_factory
    data = coco_images[2].read_bytes()
    ids = [add_image(factory, store, data, name="a.jpg"),
           add_image(factory, store, smaller_copy(data), name="b.jpg"),
           add_image(factory, store, coco_images[3].read_bytes(), name="c.jpg")]
    caption_images(ids, deps=dup_deps)
    assert groups(factory) == [(ids[0], ids[1])]


def test_without_a_duplicate_index_no_duplicate_vectors_are_made(
        deps: PipelineDeps, add_photos: Callable[[int], list[int]]) -> None:
    ids = add_photos(2)
    caption_images(ids, deps=deps)
    with deps.session_factory() as session:
        kinds = set(session.scalars(select(Embedding.kind)))
    assert kinds == {EmbeddingKind.caption.value}


def test_a_query_photo_gets_the_vector_ingest_serves_for_it(
        deps: PipelineDeps, store: LocalBlobStore, coco_images: list[Path]) -> None:
    data = coco_images[0].read_bytes()
    image_id = add_image(deps.session_factory, store, data)
    caption_images([image_id], deps=deps)
    with deps.session_factory() as session:
        served = load_vectors(session, [image_id], model=deps.settings.embedding_model)
    vector = embed_photo(data, deps)
    assert vector.shape == served[image_id].shape
    assert float(vector @ served[image_id]) == pytest.approx(1.0, abs=1e-4)


def test_a_query_photo_that_does_not_decode_is_refused(deps: PipelineDeps) -> None:
    with pytest.raises(CapsearchError) as refused:
        embed_photo(b"\xff\xd8\xff garbage", deps)
    assert 400 <= refused.value.status_code < 500


def test_backfill_groups_photos_indexed_before_duplicates_existed(
        deps: PipelineDeps, dup_deps: PipelineDeps, store: LocalBlobStore,
        coco_images: list[Path]) -> None:
    factory = deps.session_factory
    data = coco_images[4].read_bytes()
    ids = [add_image(factory, store, data, name="a.jpg"),
           add_image(factory, store, smaller_copy(data), name="b.jpg"),
           add_image(factory, store, coco_images[5].read_bytes(), name="c.jpg")]
    caption_images(ids, deps=deps)  # duplicates off: no vectors, no groups
    assert groups(factory) == []
    seen: list[tuple[int, int]] = []
    assert dup_deps.duplicates is not None
    report = backfill_duplicates(settings=deps.settings, session_factory=factory, store=store,
                                 index=dup_deps.duplicates, batch_size=2,
                                 progress=lambda done, total: seen.append((done, total)))
    assert (report.done, report.failed, report.pairs) == (3, {}, 2)  # the pair, both ways
    assert seen == [(2, 3), (3, 3)]
    assert groups(factory) == [(ids[0], ids[1])]
    again = backfill_duplicates(settings=deps.settings, session_factory=factory, store=store,
                                index=dup_deps.duplicates)
    assert again.done == 0  # resumable: nothing left to do
