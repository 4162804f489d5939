"""Ingest stages as plain functions: read bytes → decode → caption → encode → store → index.

`caption_images` runs them over one micro-batch of image ids; Celery (`worker.py`) and the
in-process queue (`inprocess.py`) are only transport around it. The batch is idempotent:
images already `indexed` or gone are skipped, and an image whose caption vector is already
stored (a batch that died after storing) goes straight to the index without a new CNN pass.

A problem with one image (blob missing, bytes that do not decode) marks only that image
`failed`; a problem with a dependency (`TRANSIENT_ERRORS`) propagates so the caller retries.

Representations (`settings.representation`, docs/quality.md): the `caption` embedding row
(`EmbeddingKind.caption`) is always the vector the search index serves. With `caption` it is
the caption's text vector; with `image` or `fused` the worker also stores the projection head's
image vector (kind `image`, from the same CNN pass as the caption), and the served vector is
the image vector, or the head's fusion of it with the text vector of the photo's tag caption
(`services/caption/projection.py`): only those tag captions are encoded (a sentence caption's
own vector adds nothing to the fused vector, docs/quality.md, so it is not computed). Queries
need no change: every served vector lives in the text encoder's space.

Near-duplicates (`PipelineDeps.duplicates`, the search service's duplicate index): the same
CNN pass's GeM vector is stored too (kind `dup`, under the CNN's name), and after indexing the
batch joins or merges duplicate groups (`grouping.py`) before it is marked indexed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.caption.captioners.base import Captioner
from services.caption.captioners.embedder import ImageEmbedder
from services.caption.grouping import duplicate_pass, group_duplicates
from shared.clients import IndexWriter, NeighbourIndex, SyncEncoder
from shared.config import Settings
from shared.db import Caption, Embedding, EmbeddingKind, ImageRecord, ImageStatus
from shared.db.queries import load_vectors
from shared.duplicates import duplicate_vector_model
from shared.errors import DependencyError, NotFound
from shared.images import decode_rgb
from shared.metrics import observe_batch
from shared.storage import BlobStore, original_key
from shared.vectors import to_bytes

log = logging.getLogger(__name__)

# worth a retry of the whole batch: a dependency or the database is down or slow, or an image
# was deleted while its batch ran (a foreign-key violation; the retry no longer sees it)
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (DependencyError, OperationalError,
                                                 IntegrityError)
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class PipelineDeps:
    """Everything the stages need; built once per worker process."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: BlobStore
    captioner: Captioner
    encoder: SyncEncoder
    index: IndexWriter
    # maps the CNN pass to the text space; needed by the `image` and `fused` representations
    embedder: ImageEmbedder | None = None
    # the near-duplicate vectors' index (None: no duplicate vectors or groups, `grouping.py`)
    duplicates: NeighbourIndex | None = None


@dataclass(frozen=True)
class Analysed:
    """What the models made of a batch: captions, the served vectors, the other kinds."""

    captions: list[str]
    vectors: NDArray[np.float32]
    extra: dict[EmbeddingKind, NDArray[np.float32]]


@dataclass
class StageTimings:
    """Seconds spent per stage of one batch, summed (`with report.timed("caption"): ...`)."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class BatchReport(StageTimings):
    """What one call of `caption_images` did, and how long each stage took (seconds)."""

    indexed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    captions: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    image_id: int
    sha256: str


# ---- stages ------------------------------------------------------------------------------------


def load_work(session_factory: sessionmaker[Session], image_ids: Sequence[int]
              ) -> tuple[list[WorkItem], list[int]]:
    """The images still to do, in the asked order, and the ids skipped (gone or indexed)."""
    wanted = list(dict.fromkeys(int(i) for i in image_ids))
    with session_factory() as session:
        rows = session.execute(
            select(ImageRecord.id, ImageRecord.sha256, ImageRecord.status)
            .where(ImageRecord.id.in_(wanted))
        ).all()
    found = {row.id: row for row in rows}
    todo = [WorkItem(i, found[i].sha256) for i in wanted
            if i in found and found[i].status != ImageStatus.indexed]
    skipped = [i for i in wanted if i not in found or found[i].status == ImageStatus.indexed]
    return todo, skipped


def read_originals(store: BlobStore, items: Sequence[WorkItem]
                   ) -> tuple[dict[int, bytes], dict[int, str]]:
    """Original bytes by image id, and the images whose blob is missing (permanent)."""
    blobs: dict[int, bytes] = {}
    failures: dict[int, str] = {}
    for item in items:
        try:
            blobs[item.image_id] = store.get(original_key(item.sha256))
        except NotFound:
            failures[item.image_id] = f"the original ({original_key(item.sha256)}) is missing"
    return blobs, failures


def decode_images(blobs: dict[int, bytes]) -> tuple[dict[int, Image.Image], dict[int, str]]:
    """Upright RGB images by id, and the images whose bytes do not decode (permanent)."""
    images: dict[int, Image.Image] = {}
    failures: dict[int, str] = {}
    for image_id, data in blobs.items():
        try:
            images[image_id] = decode_rgb(data)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            failures[image_id] = f"the image does not decode: {type(exc).__name__}: {exc}"
    return images, failures


def encode_captions(encoder: SyncEncoder, texts: Sequence[str]) -> NDArray[np.float32]:
    """One encoder call for the whole batch; a malformed answer counts as a dependency error."""
    vectors = np.asarray(encoder.encode(list(texts)), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise DependencyError(f"the encoder returned shape {vectors.shape} "
                              f"for {len(texts)} texts")
    return vectors


def store_results(session_factory: sessionmaker[Session], *, captions: dict[int, str],
                  vectors: NDArray[np.float32], captioner: Captioner, embedding_model: str,
                  failures: dict[int, str],
                  extra_vectors: dict[EmbeddingKind, NDArray[np.float32]] | None = None,
                  models: dict[EmbeddingKind, str] | None = None) -> None:
    """In one transaction: upsert captions and vectors, mark them captioned, mark failures.

    `vectors` are the served ones (kind `caption`); `extra_vectors` maps other kinds
    (`image`, `dup`) to vectors of the same images, stored beside them, under
    `embedding_model` or the kind's own model in `models` (`dup`: the CNN's name)."""
    models = models or {}
    ids = list(captions)
    with session_factory.begin() as session:
        if ids:
            upsert_rows(session, Caption, ["image_id", "model"], [
                {"image_id": i, "text": captions[i], "model": captioner.name,
                 "model_version": captioner.version} for i in ids])
            kinds = {EmbeddingKind.caption: vectors, **(extra_vectors or {})}
            upsert_rows(session, Embedding, ["image_id", "kind", "model"], [
                {"image_id": i, "kind": kind.value, "model": models.get(kind, embedding_model),
                 "dim": int(vec.shape[0]), "vector": to_bytes(vec)}
                for kind, rows in kinds.items() for i, vec in zip(ids, rows, strict=True)])
            session.execute(update(ImageRecord).where(ImageRecord.id.in_(ids)).values(
                status=ImageStatus.captioned.value, error=None,
                attempts=ImageRecord.attempts + 1))
        _mark_failed(session, failures)


def add_to_index(index: IndexWriter, image_ids: Sequence[int],
                 vectors: NDArray[np.float32]) -> None:
    """One call hands the whole batch to the search index."""
    index.add(list(image_ids), vectors)


def mark_indexed(session_factory: sessionmaker[Session], image_ids: Sequence[int]) -> None:
    with session_factory.begin() as session:
        session.execute(update(ImageRecord).where(ImageRecord.id.in_(list(image_ids)))
                        .values(status=ImageStatus.indexed.value, error=None))


def mark_failed(session_factory: sessionmaker[Session], failures: dict[int, str]) -> None:
    """Mark each image failed with its own reason (one bulk statement)."""
    with session_factory.begin() as session:
        _mark_failed(session, failures)


def mark_unfinished_failed(session_factory: sessionmaker[Session], image_ids: Sequence[int],
                           reason: str) -> int:
    """When retries are exhausted: every image of the batch not yet indexed becomes failed."""
    with session_factory.begin() as session:
        result = session.execute(
            update(ImageRecord)
            .where(ImageRecord.id.in_([int(i) for i in image_ids]),
                   ImageRecord.status != ImageStatus.indexed.value)
            .values(status=ImageStatus.failed.value, error=reason[:MAX_ERROR_CHARS],
                    attempts=ImageRecord.attempts + 1))
    return int(getattr(result, "rowcount", 0) or 0)


# ---- the batch -------------------------------------------------------------------------------


def caption_images(image_ids: Sequence[int], *, deps: PipelineDeps) -> BatchReport:
    """Caption, embed, store and index one micro-batch of images (idempotent)."""
    report = BatchReport()
    with report.timed("load"):
        items, report.skipped = load_work(deps.session_factory, image_ids)
        # vectors already stored (by a batch that died before indexing) skip the models
        with deps.session_factory() as session:
            stored = load_vectors(session, [i.image_id for i in items],
                                  model=deps.settings.embedding_model)
    fresh = [item for item in items if item.image_id not in stored]
    with report.timed("read"):
        blobs, report.failed = read_originals(deps.store, fresh)
    with report.timed("decode"):
        images, bad = decode_images(blobs)
        report.failed.update(bad)
    ids = list(images)
    done = Analysed([], np.zeros((0, 0), dtype=np.float32), {})
    if ids:
        done = analyse_images([images[i] for i in ids], deps, report)
        report.captions = dict(zip(ids, done.captions, strict=True))
    if ids or report.failed:
        with report.timed("store"):
            store_results(deps.session_factory, captions=report.captions, vectors=done.vectors,
                          captioner=deps.captioner,
                          embedding_model=deps.settings.embedding_model,
                          failures=report.failed, extra_vectors=done.extra,
                          models={EmbeddingKind.dup: duplicate_vector_model(deps.settings)})
    to_index = list(stored) + ids
    if to_index:
        parts = [np.stack(list(stored.values()))] if stored else []
        if ids:
            parts.append(done.vectors)
        with report.timed("index"):
            add_to_index(deps.index, to_index, np.vstack(parts))
        if deps.duplicates is not None:
            with report.timed("duplicates"):
                group_batch(deps, list(stored), ids, done.extra.get(EmbeddingKind.dup))
        mark_indexed(deps.session_factory, to_index)
        report.indexed = to_index
    _log_report(len(image_ids), report)
    observe_batch(report.timings, indexed=len(report.indexed), failed=len(report.failed),
                  skipped=len(report.skipped))
    return report


def analyse_images(images: Sequence[Image.Image], deps: PipelineDeps,
                   report: BatchReport | None = None) -> Analysed:
    """Decoded photos → captions, the served vectors (`settings.representation`) and the
    other kinds stored beside them (`image`; `dup` with duplicates on), from one CNN
    pass where the captioner makes one; also what a query by photo runs (`example.py`)."""
    report = report or BatchReport()
    representation = deps.settings.representation
    embedder = deps.embedder if representation != "caption" else None
    if representation != "caption" and embedder is None:
        raise ValueError(f"the {representation!r} representation needs an image embedder")
    with report.timed("caption"):
        analysis = (deps.captioner.analyse(images, embedder, duplicates=True)
                    if deps.duplicates is not None else deps.captioner.analyse(images, embedder))
    image = analysis.image
    extra: dict[EmbeddingKind, NDArray[np.float32]] = {}
    if image is None or embedder is None:  # `caption`: the caption's text vector is served
        with report.timed("encode"):
            vectors = encode_captions(deps.encoder, analysis.captions)
    else:
        # `fused` encodes only the tag captions it adds (a sentence caption's own vector adds
        # nothing to the fused vector: docs/quality.md); `image` encodes no text
        fusion = np.zeros((len(images), 0), dtype=np.float32)
        if representation == "fused":
            with report.timed("encode"):
                fusion = encode_captions(deps.encoder, image.texts)
        extra[EmbeddingKind.image] = image.vectors
        vectors = embedder.serve(representation, fusion, image.vectors,
                                 deps.settings.fusion_weight)
    if deps.duplicates is not None:
        with report.timed("caption"):
            extra[EmbeddingKind.dup] = (analysis.duplicates if analysis.duplicates is not None
                                        else duplicate_pass(images, deps.settings))
    return Analysed(analysis.captions, vectors, extra)


def group_batch(deps: PipelineDeps, stored: list[int], ids: list[int],
                vectors: NDArray[np.float32] | None) -> None:
    """The batch's photos into the duplicate index and their groups (`grouping.py`); photos
    whose vectors a died batch stored are read back."""
    assert deps.duplicates is not None
    model = duplicate_vector_model(deps.settings)
    with deps.session_factory() as session:
        found = load_vectors(session, stored, model=model, kind=EmbeddingKind.dup)
    todo = dict(found)
    if vectors is not None:
        todo.update(zip(ids, vectors, strict=True))
    if todo:
        group_duplicates(deps.session_factory, deps.duplicates, list(todo),
                         np.stack(list(todo.values())), model=model,
                         threshold=deps.settings.duplicate_threshold,
                         k=deps.settings.duplicate_neighbours)


# ---- helpers ---------------------------------------------------------------------------------


def upsert_rows(session: Session, model: type[Any], keys: list[str],
            rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT (keys) DO UPDATE for many rows in one statement (SQLite/Postgres)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    stmt = insert(model)
    updated = [column for column in rows[0] if column not in keys] + ["created_at"]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={column: stmt.excluded[column] for column in updated})
    session.execute(stmt, rows)


def _mark_failed(session: Session, failures: dict[int, str]) -> None:
    if failures:
        session.execute(update(ImageRecord), [
            {"id": image_id, "status": ImageStatus.failed.value,
             "error": reason[:MAX_ERROR_CHARS]} for image_id, reason in failures.items()])
        session.execute(update(ImageRecord).where(ImageRecord.id.in_(list(failures)))
                        .values(attempts=ImageRecord.attempts + 1))


def _log_report(asked: int, report: BatchReport) -> None:
    stages = " ".join(f"{stage}={seconds * 1000:.0f}ms"
                      for stage, seconds in report.timings.items())
    log.info("caption batch: %d asked, %d indexed, %d failed, %d skipped; %s",
             asked, len(report.indexed), len(report.failed), len(report.skipped), stages)
    for image_id, reason in report.failed.items():
        log.warning("image %d failed: %s", image_id, reason)
