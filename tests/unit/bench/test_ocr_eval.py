"""The OCR bench's scoring: strict and joined word matches, plain photos as false words."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.ocr_eval import EngineRun, joined_credit, score
from bench.text_photos import TextPhoto
from services.caption.ocr import NoiseRule


def test_a_read_word_made_of_consecutive_painted_words_is_credited_once() -> None:
    left = Counter({"platform": 1, "9": 1, "kings": 1, "cross": 1})
    assert joined_credit(("PLATFORM 9", "KINGS CROSS"), left, "kingscross") == 2
    assert left["kings"] == 0 and left["cross"] == 0
    assert joined_credit(("PLATFORM 9", "KINGS CROSS"), left, "kingscross") == 0
    assert joined_credit(("PLATFORM 9",), Counter({"platform": 1}), "9platform") == 0


def test_score_counts_strict_joined_and_plain_words() -> None:
    photos = [TextPhoto(Path("a.jpg"), "sign", ("PLATFORM 9", "KINGS CROSS")),
              TextPhoto(Path("b.jpg"), "plain", ())]
    run = EngineRun("fake", {"a.jpg": [("PLATFORM 9", 0.9), ("KINGSCROSS", 0.9), ("x", 0.2)],
                             "b.jpg": [("SEAT", 0.9)]},
                    {"a.jpg": 10.0, "b.jpg": 2.0}, {"a.jpg": 5.0, "b.jpg": 1.0})
    out = score(photos, run, NoiseRule(0.5, 1))
    sign = out["sign"]
    assert (sign["recall"], sign["precision"]) == (50.0, round(200 / 3, 1))
    assert (sign["recall_joined"], sign["precision_joined"]) == (100.0, 100.0)
    assert out["painted"]["precision_joined_with_plain"] == 75.0  # SEAT counts as false
    assert out["plain"]["images_with_text"] == 100.0 and out["plain"]["cpu_ms"] == 1.0
