"""Text in photos: PP-OCRv4 detection and recognition, offline, through rapidocr-onnxruntime.

The models (detector 4.7 MB, recogniser 10.9 MB, 180° classifier 0.6 MB) ship inside the
`rapidocr-onnxruntime` wheel and run on ONNX Runtime; nothing is downloaded. Chosen over
Debian's tesseract by `bench/ocr_eval.py` (docs/quality.md, "Text in photos").

A photo is read in up to three steps, so that one without text costs one small pass:

1. **Probe** with the detector on a copy whose long side is at most `probe_side` px (never
   upscaled: the package's own default scales the *short* side up to 736 px and leaves a
   camera photo at full size, 2.5 s of CPU for a 1920 px photo). No box → done: no second
   pass, no recognition.
2. **Detect** again at up to `det_side` px, only when the probe found text, for the boxes
   that are read (small print needs the pixels).
3. **Recognise** only the detected lines, cut from the photo at up to `rec_side` px,
   optionally turned upright by the 180° classifier; spaces the recogniser dropped are put
   back from the gaps between characters (`spaced`).

Lines that are likely noise are dropped by `NoiseRule` (confidence and letters-or-digits
count, chosen on the same bench). No web or database imports here.
"""

from __future__ import annotations

import logging
import queue
import re
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from shared.devices import cpu_streams
from shared.inference import InferenceModel

log = logging.getLogger(__name__)

MODEL_NAME = "pp-ocrv4"
# the long side of the first, cheap detection pass: a photo where it finds nothing costs only
# this (bench/ocr_eval.py: 155 ms of one core for a 1920 px photo against 434 ms at 960)
PROBE_SIDE = 640
# the long side of the detection pass whose boxes are read, run only after the probe found
# text (small print of pages and screenshots needs it: 93 % of screenshot words at 960, 77 %
# at 640)
DET_SIDE = 960
# the long side recognition crops are cut from (the package's own cap for its input)
REC_SIDE = 2000
# a space where two characters sit this many median character pitches apart (bench/ocr_eval.py)
SPACE_RATIO: float | None = 1.5
# loggers the package configures with its own stderr handlers at DEBUG level
_PACKAGE_LOGGERS = ("RapidOCR", "OrtInferSession")
_WORD = re.compile(r"[^\W_]+")

Point = tuple[int, int]


@dataclass(frozen=True)
class NoiseRule:
    """Which recognised lines to keep: confidence at least `min_confidence` and at least
    `min_chars` letters or digits (texture read as "ll", "—", "=" is dropped)."""

    min_confidence: float = 0.75
    min_chars: int = 2

    def keep(self, text: str, confidence: float) -> bool:
        chars = sum(ch.isalnum() for ch in text)
        return confidence >= self.min_confidence and chars >= self.min_chars


@dataclass(frozen=True)
class OcrLine:
    """One line of text: what it says, the recogniser's confidence (0-1), and its four
    corners (clockwise from top-left) in the pixels of the image that was read."""

    text: str
    confidence: float
    box: tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class OcrResult:
    """The lines read in one image, top to bottom, left to right (noise dropped)."""

    lines: tuple[OcrLine, ...] = ()

    @property
    def text(self) -> str:
        """The lines joined by newlines: what is stored and searched."""
        return "\n".join(line.text for line in self.lines)

    @property
    def confidence(self) -> float | None:
        """Mean line confidence weighted by length; None without text."""
        weights = [len(line.text) for line in self.lines]
        if not sum(weights):
            return None
        return sum(w * line.confidence for w, line in zip(weights, self.lines,
                                                          strict=True)) / sum(weights)


def normalise_words(text: str) -> list[str]:
    """Lower-case letters-and-digits words (NFKC), the way full-text search splits text."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


class OcrEngine(InferenceModel):
    """Base of OCR engines: `load()` → `_load()` once (`InferenceModel`), `read()` → `_read()`
    per image."""

    name = ""

    def __init__(self, *, rule: NoiseRule | None = None) -> None:
        super().__init__()
        self.rule = rule or NoiseRule()

    def __str__(self) -> str:
        return f"ocr {self.name}"

    def read(self, images: Sequence[Image.Image]) -> list[OcrResult]:
        """The text of every image, in order; lines the noise rule rejects are dropped."""
        self.load()
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        return [OcrResult(tuple(line for line in lines
                                if self.rule.keep(line.text, line.confidence)))
                for lines in self._read_all(rgb)]

    def _read_all(self, images: list[Image.Image]) -> list[list[OcrLine]]:
        """Every line found in each RGB image, before the noise rule."""
        return [self._read(image) for image in images]

    def _read(self, image: Image.Image) -> list[OcrLine]:
        """Every line found in one RGB image, before the noise rule."""
        raise NotImplementedError


@dataclass(frozen=True)
class LineReading:
    """A recognised line before spacing: its characters, the CTC column where each was read
    (one column = 1/6 of the line's height), the line's confidence and its box."""

    chars: str
    columns: tuple[int, ...]
    confidence: float
    box: tuple[Point, Point, Point, Point]


def spaced(chars: str, columns: Sequence[int], ratio: float | None) -> str:
    """The line with a space wherever two characters sit more than `ratio` times the line's
    median character pitch apart (None: only the spaces the recogniser wrote).

    The bundled recogniser was trained mostly on Chinese, where words have no spaces, and
    often runs English words together ("KINGSCROSS"); the gap the space leaves is still
    there in the CTC columns (PaddleOCR's word boxes split on the same kind of gap)."""
    if ratio is None or len(chars) < 3:
        return " ".join(chars.split())
    steps = [(prev, char, b - a) for (prev, char), (a, b)
             in zip(pairwise(chars), pairwise(columns), strict=True)]
    pitches = [gap for prev, char, gap in steps if not prev.isspace() and not char.isspace()]
    if not pitches:
        return " ".join(chars.split())
    limit = ratio * float(np.median(pitches))
    out = [chars[0]]
    for prev, char, gap in steps:
        if not prev.isspace() and not char.isspace() and gap > limit:
            out.append(" ")
        out.append(char)
    return " ".join("".join(out).split())


class RapidOcrEngine(OcrEngine):
    """PP-OCRv4 (Chinese + English recogniser) from the `rapidocr-onnxruntime` wheel.

    On a CPU the images of one `read` run as `streams` parallel single-threaded passes (one
    per usable core by default, as the CNN does): on 2 shared cores one thread per pass took
    half the CPU time of a 2-thread pass for the same detector input (bench/ocr_eval.py)."""

    name = MODEL_NAME

    def __init__(self, *, probe_side: int | None = PROBE_SIDE, det_side: int = DET_SIDE,
                 rec_side: int = REC_SIDE, upright: bool = True,
                 space_ratio: float | None = SPACE_RATIO, streams: int | None = None,
                 threads: int = 1, rule: NoiseRule | None = None) -> None:
        super().__init__(rule=rule)
        probe_side = probe_side or det_side  # None: one detection pass at det_side
        if not 32 <= probe_side <= det_side <= rec_side:
            raise ValueError("need 32 <= probe_side <= det_side <= rec_side")
        self.probe_side = probe_side
        self.det_side = det_side
        self.rec_side = rec_side
        self.upright = upright  # run the 180° classifier on every detected line
        self.space_ratio = space_ratio
        # parallel passes: the cores this process may use (cgroup-aware), each `threads` wide
        self.streams = cpu_streams(streams)
        self.threads = threads
        self._engines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None

    def _load(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise RuntimeError("text in photos needs rapidocr-onnxruntime: "
                               "pip install 'capsearch[ocr]'") from exc

        for _ in range(self.streams):  # one per stream: the objects keep per-call state
            # det_limit_type "max": the detector never scales our bounded copy up (its
            # default, "min" 736, scales the short side up to 736 px)
            self._engines.put(RapidOCR(intra_op_num_threads=self.threads,
                                       inter_op_num_threads=1, det_limit_type="max",
                                       text_score=0.0, print_verbose=False))
        for name in _PACKAGE_LOGGERS:  # they print to stderr at DEBUG by themselves
            package_log = logging.getLogger(name)
            package_log.handlers.clear()
            package_log.setLevel(logging.WARNING)
            package_log.propagate = True
        if self.streams > 1:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="ocr")

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._engines = queue.SimpleQueue()

    def _read_all(self, images: list[Image.Image]) -> list[list[OcrLine]]:
        if self._pool is None or len(images) < 2:
            return [self._read(image) for image in images]
        return list(self._pool.map(self._read, images))

    def _read(self, image: Image.Image) -> list[OcrLine]:
        return [OcrLine(spaced(r.chars, r.columns, self.space_ratio), r.confidence, r.box)
                for r in self.readings(image) if r.chars.strip()]

    def readings(self, image: Image.Image) -> list[LineReading]:
        """Every detected line of one RGB image, recognised, before spacing and the rule."""
        self.load()
        engine = self._engines.get()
        try:
            boxes = self._detect(engine, image, self.probe_side)
            if not len(boxes):
                return []  # the cheap path: one small pass for a photo without text
            if self.probe_side < self.det_side and max(image.size) > self.probe_side:
                boxes = self._detect(engine, image, self.det_side)
            if not len(boxes):
                return []
            big, scale = _fit(image, self.rec_side)
            crops = engine.get_crop_img_list(_bgr(big), list(boxes * scale))
            if self.upright:
                crops, _, _ = engine.text_cls(crops)
            recognised, _ = engine.text_rec(crops, True)  # with the characters' columns
        finally:
            self._engines.put(engine)
        lines = []
        for box, (text, score, info) in zip(boxes, recognised, strict=True):
            columns = tuple(int(c) for word in info[2] for c in word)
            chars = "".join(ch for word in info[1] for ch in word)
            if chars != text or len(columns) != len(chars):  # pragma: no cover - defensive
                chars, columns = str(text), tuple(range(0, 4 * len(text), 4))
            corners = tuple((int(round(x)), int(round(y))) for x, y in box)
            lines.append(LineReading(chars, columns, float(score), corners))  # type: ignore[arg-type]
        return lines

    def detect(self, image: Image.Image, side: int | None = None) -> NDArray[np.float32]:
        """Line boxes (N, 4, 2) in the image's pixels, from a pass at most `side` (default
        `det_side`) px wide."""
        self.load()
        engine = self._engines.get()
        try:
            return self._detect(engine, image, side or self.det_side)
        finally:
            self._engines.put(engine)

    def _detect(self, engine: Any, image: Image.Image, side: int) -> NDArray[np.float32]:
        small, scale = _fit(image, side)
        boxes, _ = engine(_bgr(small), use_cls=False, use_rec=False)
        if not boxes:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return np.asarray(boxes, dtype=np.float32) / scale


def _fit(image: Image.Image, side: int) -> tuple[Image.Image, float]:
    """The image scaled down so its long side is at most `side` (never up), and the scale."""
    long_side = max(image.size)
    if long_side <= side:
        return image, 1.0
    scale = side / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def _bgr(image: Image.Image) -> NDArray[np.uint8]:
    """RGB PIL image → contiguous BGR array (OpenCV's order, which the package expects)."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, ::-1])
