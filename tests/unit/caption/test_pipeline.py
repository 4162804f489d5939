"""The ingest pipeline end to end on SQLite + a local blob folder, real captioner and encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError

from services.caption.captioners.base import build_captioner
from services.caption.pipeline import (
    TRANSIENT_ERRORS,
    PipelineDeps,
    caption_images,
    decode_images,
    mark_unfinished_failed,
)
from services.caption.projection import build_embedder
from shared.db import Caption, Embedding, ImageRecord
from shared.errors import DependencyTimeout, DependencyUnavailable
from shared.storage import LocalBlobStore, original_key
from shared.vectors import from_bytes
from tests.unit.caption.conftest import CountingEncoder, FakeIndex, add_image, statuses

pytestmark = pytest.mark.slow

AddPhotos = Callable[[int], list[int]]


def test_pending_images_end_up_indexed(deps: PipelineDeps, add_photos: AddPhotos,
                                       index: FakeIndex) -> None:
    ids = add_photos(3)
    assert set(statuses(deps.session_factory, ids).values()) == {"pending"}
    report = caption_images(ids, deps=deps)
    assert sorted(report.indexed) == sorted(ids)
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}
    assert len(index.calls) == 1 and sorted(index.calls[0][0]) == sorted(ids)


def test_captions_and_unit_vectors_are_stored(deps: PipelineDeps, add_photos: AddPhotos) -> None:
    ids = add_photos(2)
    report = caption_images(ids, deps=deps)
    with deps.session_factory() as session:
        captions = {c.image_id: c for c in session.scalars(select(Caption))}
        embeddings = {e.image_id: e for e in session.scalars(select(Embedding))}
    assert {i: c.text for i, c in captions.items()} == report.captions
    assert {c.model for c in captions.values()} == {"tags"}
    for embedding in embeddings.values():
        assert (embedding.kind, embedding.model, embedding.dim) == (
            "caption", deps.settings.embedding_model, 384)
        assert np.linalg.norm(from_bytes(embedding.vector, 384)) == pytest.approx(1.0, abs=1e-5)


def test_one_encoder_call_per_batch(deps: PipelineDeps, add_photos: AddPhotos,
                                    encoder: CountingEncoder) -> None:
    caption_images(add_photos(5), deps=deps)  # more images than the captioner's batch size
    assert encoder.calls == 1


def test_a_missing_blob_fails_only_that_image(deps: PipelineDeps, add_photos: AddPhotos,
                                              store: LocalBlobStore,
                                              coco_images: list[Path]) -> None:
    ids = add_photos(2)
    lost = add_image(deps.session_factory, store, coco_images[4].read_bytes(), put_blob=False)
    report = caption_images([*ids, lost], deps=deps)
    assert statuses(deps.session_factory, [*ids, lost]) == {ids[0]: "indexed",
                                                             ids[1]: "indexed",
                                                             lost: "failed"}
    with deps.session_factory() as session:
        error = session.get(ImageRecord, lost).error  # type: ignore[union-attr]
    assert error is not None and "missing" in error
    assert lost in report.failed


def test_undecodable_bytes_fail_only_that_image(deps: PipelineDeps, add_photos: AddPhotos,
                                                store: LocalBlobStore) -> None:
    ids = add_photos(1)
    broken = add_image(deps.session_factory, store, b"\xff\xd8\xff\xe0 not really a jpeg")
    caption_images([*ids, broken], deps=deps)
    assert statuses(deps.session_factory, [*ids, broken]) == {ids[0]: "indexed",
                                                               broken: "failed"}


def test_a_second_run_of_the_same_batch_changes_nothing(
        deps: PipelineDeps, add_photos: AddPhotos, encoder: CountingEncoder,
        index: FakeIndex) -> None:
    ids = add_photos(2)
    caption_images(ids, deps=deps)
    with deps.session_factory() as session:
        before = session.execute(select(Caption.image_id, Caption.text, Caption.id)).all()
    report = caption_images(ids, deps=deps)
    with deps.session_factory() as session:
        after = session.execute(select(Caption.image_id, Caption.text, Caption.id)).all()
    assert after == before
    assert sorted(report.skipped) == sorted(ids) and not report.indexed
    assert (encoder.calls, len(index.calls)) == (1, 1)


def test_ids_that_no_longer_exist_are_skipped(deps: PipelineDeps, add_photos: AddPhotos) -> None:
    ids = add_photos(1)
    report = caption_images([*ids, 99_999], deps=deps)
    assert report.skipped == [99_999]
    assert report.indexed == ids


@pytest.mark.parametrize("error", [DependencyUnavailable("encoder down"),
                                   DependencyTimeout("encoder slow"),
                                   OperationalError("SELECT 1", {}, Exception("db gone"))])
def test_a_transient_encoder_failure_propagates_and_fails_nothing(
        deps: PipelineDeps, add_photos: AddPhotos, encoder: CountingEncoder,
        error: Exception) -> None:
    ids = add_photos(2)
    encoder.fail_with, encoder.failures_left = error, 1
    with pytest.raises(type(error)):
        caption_images(ids, deps=deps)
    assert set(statuses(deps.session_factory, ids).values()) == {"pending"}


def test_a_batch_that_died_after_storing_is_indexed_without_a_new_caption(
        deps: PipelineDeps, add_photos: AddPhotos, encoder: CountingEncoder,
        index: FakeIndex) -> None:
    ids = add_photos(2)
    index_add = index.add
    index.add = _raise_unavailable  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable):
        caption_images(ids, deps=deps)
    assert set(statuses(deps.session_factory, ids).values()) == {"captioned"}
    index.add = index_add  # type: ignore[method-assign]
    report = caption_images(ids, deps=deps)
    assert sorted(report.indexed) == sorted(ids) and not report.captions
    assert encoder.calls == 1
    assert set(statuses(deps.session_factory, ids).values()) == {"indexed"}


def test_giving_up_fails_only_the_unfinished_images(deps: PipelineDeps,
                                                    add_photos: AddPhotos) -> None:
    done, waiting = add_photos(2)
    caption_images([done], deps=deps)
    assert mark_unfinished_failed(deps.session_factory, [done, waiting], "gave up") == 1
    assert statuses(deps.session_factory, [done, waiting]) == {done: "indexed",
                                                               waiting: "failed"}


def test_decode_reports_bad_bytes_per_image() -> None:
    images, failures = decode_images({1: b"", 2: b"GIF89a"})
    assert not images
    assert set(failures) == {1, 2}


def _raise_unavailable(*_: object) -> None:
    raise DependencyUnavailable("search down")


def test_an_image_deleted_mid_batch_is_retried_without_it(deps: PipelineDeps,
                                                          add_photos: AddPhotos) -> None:
    keep, gone = add_photos(2)
    captioner = deps.captioner

    class DeletingCaptioner:
        """Captions, and meanwhile someone deletes an image of the batch."""

        name, version = captioner.name, captioner.version

        def analyse(self, images: list, embedder: object = None) -> object:
            with deps.session_factory.begin() as session:
                session.execute(delete(ImageRecord).where(ImageRecord.id == gone))
            return captioner.analyse(images, embedder)

    racing = PipelineDeps(**{**deps.__dict__, "captioner": DeletingCaptioner()})
    with pytest.raises(TRANSIENT_ERRORS):
        caption_images([keep, gone], deps=racing)
    report = caption_images([keep, gone], deps=deps)
    assert (report.indexed, report.skipped) == ([keep], [gone])


def test_fused_encodes_only_the_tag_captions_it_serves(deps: PipelineDeps,
                                                       add_photos: AddPhotos,
                                                       encoder: CountingEncoder) -> None:
    # the default pairing: sentence captions, the served vector fused from the head's image
    # vector and the tag captions' text vector; the sentences' own vectors are not computed
    settings = deps.settings.model_copy(update={"representation": "fused"})
    embedder = build_embedder(settings)
    assert embedder is not None
    fused = replace(deps, settings=settings, embedder=embedder,
                    captioner=build_captioner("transformer", settings))
    ids = add_photos(2)
    report = caption_images(ids, deps=fused)
    tags = embedder.embed([decode_images({0: p})[0][0] for p in _originals(fused, ids)]).texts
    assert encoder.texts == tags
    assert not set(report.captions.values()) & set(encoder.texts)
    with fused.session_factory() as session:
        kinds = {(e.image_id, e.kind) for e in session.scalars(select(Embedding))}
    assert kinds == {(i, kind) for i in ids for kind in ("caption", "image")}


def _originals(deps: PipelineDeps, ids: list[int]) -> list[bytes]:
    with deps.session_factory() as session:
        rows = {r.id: r.sha256 for r in session.scalars(
            select(ImageRecord).where(ImageRecord.id.in_(ids)))}
    return [deps.store.get(original_key(rows[i])) for i in ids]
