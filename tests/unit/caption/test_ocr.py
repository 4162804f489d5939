"""The OCR engine: spacing, the noise rule, results, and the real PP-OCRv4 models (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from services.caption.ocr import (
    NoiseRule,
    OcrEngine,
    OcrLine,
    OcrResult,
    RapidOcrEngine,
    normalise_words,
    spaced,
)

BOX = ((0, 0), (10, 0), (10, 5), (0, 5))
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def test_spaced_inserts_a_space_at_a_gap_wider_than_the_character_pitch() -> None:
    # "PLATFORM9" as the recogniser reads it: letters ~5 columns apart, the 9 eight away
    columns = (2, 6, 11, 15, 20, 25, 31, 37, 45)
    assert spaced("PLATFORM9", columns, 1.5) == "PLATFORM 9"


def test_spaced_keeps_the_recognisers_own_spaces_and_adds_none_inside_words() -> None:
    chars = "KINGS CROSS"
    columns = (2, 6, 10, 16, 21, 24, 28, 33, 38, 44, 48)
    assert spaced(chars, columns, 1.5) == "KINGS CROSS"


def test_spaced_without_a_ratio_only_tidies_whitespace() -> None:
    assert spaced(" A  B ", (0, 1, 2, 30, 31, 32), None) == "A B"


def test_noise_rule_drops_unsure_lines_and_lines_without_enough_letters() -> None:
    rule = NoiseRule(min_confidence=0.75, min_chars=2)
    assert rule.keep("EXIT", 0.9)
    assert not rule.keep("EXIT", 0.5)
    assert not rule.keep("—", 0.99)
    assert not rule.keep("7", 0.99)


def test_result_text_joins_lines_and_confidence_weighs_by_length() -> None:
    result = OcrResult((OcrLine("PLATFORM 9", 1.0, BOX), OcrLine("KINGS", 0.5, BOX)))
    assert result.text == "PLATFORM 9\nKINGS"
    assert result.confidence == pytest.approx((10 * 1.0 + 5 * 0.5) / 15)
    assert OcrResult().confidence is None


def test_normalise_words_splits_like_full_text_search() -> None:
    # full-width letters (signs in CJK fonts) fold to plain ones; punctuation splits
    assert normalise_words("Ｐｌａｔｆｏｒｍ 9, KING'S-Cross!") == ["platform", "9", "king", "s",
                                                            "cross"]


class _Scripted(OcrEngine):
    """An engine that 'reads' fixed lines: for the base class's behaviour."""

    name = "scripted"

    def __init__(self, lines: list[OcrLine], rule: NoiseRule | None = None) -> None:
        super().__init__(rule=rule)
        self.lines = lines
        self.loads = 0
        self.modes: list[str] = []

    def _load(self) -> None:
        self.loads += 1

    def _read(self, image: Image.Image) -> list[OcrLine]:
        self.modes.append(image.mode)
        return self.lines


def test_read_loads_once_applies_the_rule_and_hands_rgb_to_the_engine() -> None:
    engine = _Scripted([OcrLine("OPEN", 0.9, BOX), OcrLine("ll", 0.3, BOX)])
    results = engine.read([Image.new("L", (8, 8)), Image.new("RGB", (8, 8))])
    engine.read([Image.new("RGB", (8, 8))])
    assert [r.text for r in results] == ["OPEN", "OPEN"]
    assert engine.loads == 1
    assert engine.modes == ["RGB", "RGB", "RGB"]


def test_rapid_engine_refuses_a_detector_larger_than_the_recognition_input() -> None:
    with pytest.raises(ValueError):
        RapidOcrEngine(det_side=2000, rec_side=1000)


def _sign(size: tuple[int, int] = (480, 360)) -> Image.Image:
    image = Image.new("RGB", size, (110, 140, 90))
    draw = ImageDraw.Draw(image)
    font = (ImageFont.truetype(str(DEJAVU), 34) if DEJAVU.is_file()
            else ImageFont.load_default(size=34))
    draw.rectangle((30, 40, 330, 150), fill=(20, 40, 120))
    draw.text((45, 50), "PLATFORM 9", font=font, fill="white")
    draw.text((45, 100), "KINGS CROSS", font=font, fill="white")
    return image


@pytest.fixture(scope="module")
def rapid() -> RapidOcrEngine:
    pytest.importorskip("rapidocr_onnxruntime")
    engine = RapidOcrEngine(streams=1)
    engine.load()
    return engine


@pytest.mark.slow
def test_reads_a_painted_sign(rapid: RapidOcrEngine) -> None:
    [result] = rapid.read([_sign()])
    assert {"platform", "9", "kings", "cross"} <= set(normalise_words(result.text))
    assert all(line.confidence >= rapid.rule.min_confidence for line in result.lines)
    x0, y0 = result.lines[0].box[0]
    assert 20 <= x0 <= 60 and 30 <= y0 <= 70  # in the image's own pixels


@pytest.mark.slow
def test_reads_the_sign_of_a_camera_sized_photo_in_its_pixels(rapid: RapidOcrEngine) -> None:
    big = _sign().resize((1920, 1440), Image.Resampling.BICUBIC)
    [result] = rapid.read([big])
    assert {"platform", "kings", "cross"} <= set(normalise_words(result.text))
    assert result.lines[0].box[2][0] > 960  # boxes scaled back from the detector's copy


@pytest.mark.slow
def test_a_photo_without_text_skips_recognition(rapid: RapidOcrEngine,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blank = Image.linear_gradient("L").convert("RGB").resize((640, 480))
    engines = [rapid._engines.get() for _ in range(rapid.streams)]
    for engine in engines:
        rapid._engines.put(engine)

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("recognition ran on a photo without text")

        monkeypatch.setattr(engine, "text_rec", refuse)
    assert rapid.read([blank]) == [OcrResult()]


@pytest.mark.slow
def test_loads_offline_from_the_wheel_and_prints_nothing(capfd: pytest.CaptureFixture[str]
                                                         ) -> None:
    rapidocr_onnxruntime = pytest.importorskip("rapidocr_onnxruntime")

    models = Path(rapidocr_onnxruntime.__file__).parent / "models"
    assert sorted(p.name for p in models.glob("*.onnx")) == [
        "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx"]
    engine = RapidOcrEngine(streams=2)
    engine.read([_sign(), _sign()])
    engine.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.slow
def test_only_a_photo_with_text_gets_the_finer_detection_pass(
        rapid: RapidOcrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    sides: list[int] = []
    detect = rapid._detect

    def counted(engine: object, image: Image.Image, side: int) -> object:
        sides.append(side)
        return detect(engine, image, side)

    monkeypatch.setattr(rapid, "_detect", counted)
    rapid.read([Image.linear_gradient("L").convert("RGB").resize((1920, 1440))])
    assert sides == [rapid.probe_side]
    sides.clear()
    rapid.read([_sign().resize((1920, 1440), Image.Resampling.BICUBIC)])
    assert sides == [rapid.probe_side, rapid.det_side]
