"""The OCR stage: read the text in photos already indexed, store it, make it searchable.

A second, lower-priority stage after `pipeline.caption_images`, so that a photo is searchable
by caption at the ingest rate and its text follows when the worker has time: the Celery task
`capsearch.read_texts` on queue `ocr`, which the caption worker takes only when its `caption`
queue is empty (`shared/celery_app.py`), or the in-process queue's OCR lane, run only while
no caption work waits (`inprocess.py`).

`read_photo_texts` is idempotent: only indexed images without an `image_texts` row are read,
and a row is upserted. A dependency problem (`TRANSIENT_ERRORS`) propagates so the batch is
retried; a photo that cannot be read (blob gone, OCR error) gets a row with empty text and
the reason, and never fails the photo itself: it stays indexed and searchable by caption.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from services.caption.ocr import OcrEngine, OcrResult, RapidOcrEngine
from services.caption.pipeline import (
    MAX_ERROR_CHARS,
    StageTimings,
    WorkItem,
    decode_images,
    read_originals,
    upsert_rows,
)
from shared.config import Settings
from shared.db.fulltext import photo_text_document
from shared.db.texts import ImageText, unread
from shared.metrics import observe_stage
from shared.storage import BlobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcrDeps:
    """What the OCR stage needs; built once per worker process."""

    session_factory: sessionmaker[Session]
    store: BlobStore
    engine: OcrEngine


@dataclass
class OcrReport(StageTimings):
    """What one call of `read_photo_texts` did, and how long each stage took (seconds)."""

    texts: dict[int, str] = field(default_factory=dict)  # "" when a photo has no text
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)  # gone, not indexed, or read already
    deferred: list[int] = field(default_factory=list)  # not started: captions were waiting


def build_ocr_engine(settings: Settings, *, streams: int | None = None) -> OcrEngine | None:
    """The OCR engine the settings ask for, or None: OCR off, or its package not installed
    (rapidocr-onnxruntime has no wheel for Python 3.13 yet), which is logged once here."""
    if not settings.ocr:
        return None
    try:
        import rapidocr_onnxruntime  # noqa: F401  (only whether it is there)
    except ImportError:
        log.warning("text in photos is off: rapidocr-onnxruntime is not installed "
                    "(pip install 'capsearch[ocr]'; it needs Python < 3.13)")
        return None
    return RapidOcrEngine(streams=streams or settings.cpu_streams)


def read_images(engine: OcrEngine, images: dict[int, Image.Image]
                ) -> tuple[dict[int, OcrResult], dict[int, str]]:
    """The text of every image by id, in one engine call; when that call fails, image by
    image, so that one photo the engine chokes on fails alone."""
    ids = list(images)
    try:
        return dict(zip(ids, engine.read([images[i] for i in ids]), strict=True)), {}
    except Exception:
        log.warning("OCR of a batch of %d failed; reading its photos one by one", len(ids))
    results: dict[int, OcrResult] = {}
    failures: dict[int, str] = {}
    for image_id in ids:
        try:
            results[image_id] = engine.read([images[image_id]])[0]
        except Exception as exc:
            failures[image_id] = f"OCR failed: {type(exc).__name__}: {exc}"
    return results, failures


def store_texts(session_factory: sessionmaker[Session], *, results: dict[int, OcrResult],
                failures: dict[int, str], model: str) -> None:
    """Upsert one `image_texts` row per image, read or failed, in one transaction."""
    rows = [{"image_id": i, "model": model, "text": r.text, "confidence": r.confidence,
             "words": photo_text_document(r.text), "error": None}
            for i, r in results.items()]
    rows += [{"image_id": i, "model": model, "text": "", "confidence": None, "words": "",
              "error": reason[:MAX_ERROR_CHARS]} for i, reason in failures.items()]
    if rows:
        with session_factory.begin() as session:
            upsert_rows(session, ImageText, ["image_id"], rows)


def read_photo_texts(image_ids: Sequence[int], *, deps: OcrDeps,
                     yield_to_captions: Callable[[], bool] | None = None) -> OcrReport:
    """Read, store and index the text of one batch of indexed photos (idempotent).

    The photos are read a few at a time (one per engine stream); before each group after the
    first, `yield_to_captions()` true stops the batch, and the photos not started are left
    in `report.deferred` for the caller to queue again: caption work waits for at most one
    group, not a whole OCR batch."""
    report = OcrReport()
    with report.timed("ocr_load"):
        with deps.session_factory() as session:
            todo = list(unread(session, image_ids).items())
    report.skipped = [int(i) for i in dict.fromkeys(image_ids)
                      if int(i) not in dict(todo)]
    group = max(1, int(getattr(deps.engine, "streams", 1)))
    for start in range(0, len(todo), group):
        if start and yield_to_captions is not None and yield_to_captions():
            report.deferred = [i for i, _ in todo[start:]]
            break
        _read_group(deps, dict(todo[start:start + group]), report)
    for stage, seconds in report.timings.items():
        observe_stage(stage, seconds)
    log.info("ocr batch: %d asked, %d read (%d with text), %d failed, %d skipped, "
             "%d left for after the captions; %s",
             len(image_ids), len(report.texts), sum(bool(t) for t in report.texts.values()),
             len(report.failed), len(report.skipped), len(report.deferred),
             " ".join(f"{s}={t * 1000:.0f}ms" for s, t in report.timings.items()))
    for image_id, reason in report.failed.items():
        log.warning("text of image %d not read: %s", image_id, reason)
    return report


def _read_group(deps: OcrDeps, todo: dict[int, str], report: OcrReport) -> None:
    """Read, store and report one group of photos (sha256 by id)."""
    with report.timed("ocr_read_blobs"):
        blobs, failures = read_originals(deps.store, [WorkItem(i, sha)
                                                      for i, sha in todo.items()])
        images, bad = decode_images(blobs)
        failures.update(bad)
    with report.timed("ocr"):
        results, unreadable = read_images(deps.engine, images)
        failures.update(unreadable)
    with report.timed("ocr_store"):
        store_texts(deps.session_factory, results=results, failures=failures,
                    model=deps.engine.name)
    report.texts.update({i: r.text for i, r in results.items()})
    report.failed.update(failures)
