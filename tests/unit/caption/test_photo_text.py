"""The OCR stage (`photo_text.read_photo_texts`) with a scripted engine: what it reads, stores
and skips, and how a photo it cannot read is recorded without failing the photo."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.caption.ocr import NoiseRule, OcrEngine, OcrLine
from services.caption.photo_text import OcrDeps, build_ocr_engine, read_photo_texts
from shared.config import Settings
from shared.db import ImageRecord, ImageStatus
from shared.db.fulltext import match_photo_text
from shared.db.texts import count_ocr_waiting, texts_of
from shared.storage import LocalBlobStore
from tests.unit.caption.conftest import add_image, statuses

BOX = ((0, 0), (10, 0), (10, 5), (0, 5))


class ScriptedEngine(OcrEngine):
    """'Reads' the lines scripted for a photo's width; raises for a width in `broken`."""

    name = "scripted"

    def __init__(self, lines: dict[int, list[OcrLine]], broken: set[int] | None = None) -> None:
        super().__init__(rule=NoiseRule())
        self.lines = lines
        self.broken = broken or set()
        self.read_widths: list[int] = []

    def _load(self) -> None:
        pass

    def _read(self, image: Image.Image) -> list[OcrLine]:
        if image.width in self.broken:
            raise RuntimeError(f"engine choked on a {image.width} px photo")
        self.read_widths.append(image.width)
        return self.lines.get(image.width, [])


def jpeg(width: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, 20), (200, 200, 200)).save(out, format="JPEG")
    return out.getvalue()


def indexed_photo(sessions: sessionmaker[Session], store: LocalBlobStore, width: int,
                  *, put_blob: bool = True) -> int:
    image_id = add_image(sessions, store, jpeg(width), put_blob=put_blob, name=f"{width}.jpg")
    with sessions.begin() as session:
        session.execute(update(ImageRecord).where(ImageRecord.id == image_id)
                        .values(status=ImageStatus.indexed.value))
    return image_id


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine({
        40: [OcrLine("PLATFORM 9", 0.98, BOX), OcrLine("KINGS CROSS", 0.94, BOX)],
        41: [OcrLine("—", 0.99, BOX), OcrLine("EXIT", 0.4, BOX)],  # noise: dropped
    }, broken={43})


@pytest.fixture
def ocr(session_factory: sessionmaker[Session], store: LocalBlobStore,
        engine: ScriptedEngine) -> OcrDeps:
    return OcrDeps(session_factory=session_factory, store=store, engine=engine)


def test_text_is_stored_per_photo_and_found_by_its_words(
        ocr: OcrDeps, session_factory: sessionmaker[Session], store: LocalBlobStore) -> None:
    sign = indexed_photo(session_factory, store, 40)
    plain = indexed_photo(session_factory, store, 41)
    report = read_photo_texts([sign, plain], deps=ocr)
    assert report.texts == {sign: "PLATFORM 9\nKINGS CROSS", plain: ""}
    with ocr.session_factory() as session:
        rows = texts_of(session, [sign, plain])
        assert rows[sign].text == "PLATFORM 9\nKINGS CROSS"
        assert rows[sign].confidence == pytest.approx((10 * 0.98 + 11 * 0.94) / 21)
        assert rows[sign].model == "scripted" and rows[sign].error is None
        assert rows[plain].text == "" and rows[plain].confidence is None
        assert match_photo_text(session, "platform 9 kings cross", 10) == [sign]
        assert count_ocr_waiting(session) == 0


def test_a_second_run_reads_nothing_again(ocr: OcrDeps, engine: ScriptedEngine,
                                          session_factory: sessionmaker[Session],
                                          store: LocalBlobStore) -> None:
    sign = indexed_photo(session_factory, store, 40)
    read_photo_texts([sign], deps=ocr)
    report = read_photo_texts([sign, sign], deps=ocr)  # a retried or duplicated task
    assert report.skipped == [sign] and report.texts == {}
    assert engine.read_widths == [40]


def test_photos_not_indexed_or_gone_are_skipped(ocr: OcrDeps, engine: ScriptedEngine,
                                                session_factory: sessionmaker[Session],
                                                store: LocalBlobStore) -> None:
    pending = add_image(session_factory, store, jpeg(40))
    report = read_photo_texts([pending, 12345], deps=ocr)
    assert report.skipped == [pending, 12345]
    assert engine.read_widths == []


def test_a_photo_that_cannot_be_read_is_recorded_and_stays_indexed(
        ocr: OcrDeps, session_factory: sessionmaker[Session], store: LocalBlobStore) -> None:
    sign = indexed_photo(session_factory, store, 40)
    broken = indexed_photo(session_factory, store, 43)  # the engine raises on it
    no_blob = indexed_photo(session_factory, store, 44, put_blob=False)
    report = read_photo_texts([sign, broken, no_blob], deps=ocr)
    assert report.texts == {sign: "PLATFORM 9\nKINGS CROSS"}  # the others did not spoil it
    assert set(report.failed) == {broken, no_blob}
    assert "choked" in report.failed[broken] and "missing" in report.failed[no_blob]
    assert statuses(session_factory, [sign, broken, no_blob]) == {
        sign: "indexed", broken: "indexed", no_blob: "indexed"}
    with session_factory() as session:
        rows = texts_of(session, [broken, no_blob])
        assert rows[broken].text == "" and "choked" in (rows[broken].error or "")
        assert count_ocr_waiting(session) == 0  # recorded: not read again and again


def test_the_engine_is_built_only_when_ocr_is_on() -> None:
    assert build_ocr_engine(Settings(ocr=False)) is None
    engine = build_ocr_engine(Settings(ocr=True), streams=1)
    assert engine is not None and not engine.loaded  # loaded on the first photo it reads


def test_a_batch_yields_to_captions_between_photos(
        ocr: OcrDeps, engine: ScriptedEngine, session_factory: sessionmaker[Session],
        store: LocalBlobStore) -> None:
    first, second, third = (indexed_photo(session_factory, store, w) for w in (40, 41, 42))
    asked: list[int] = []

    def captions_waiting() -> bool:  # a caption batch arrives while the first photo is read
        asked.append(len(engine.read_widths))
        return True

    report = read_photo_texts([first, second, third], deps=ocr,
                              yield_to_captions=captions_waiting)
    assert list(report.texts) == [first] and report.deferred == [second, third]
    assert asked == [1]  # never asked before the first photo: a batch always progresses
    with session_factory() as session:
        assert set(texts_of(session, [first, second, third])) == {first}
    assert read_photo_texts(report.deferred, deps=ocr).texts == {second: "", third: ""}
