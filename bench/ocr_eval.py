"""OCR on photos: word recall / precision and ms per photo, PP-OCRv4 (rapidocr) vs tesseract.

The set (bench/text_photos.py, generated once into the cache folder): words painted into real
photos as signs, shop-front banners and outlined overlays, pages of text (flat and
photographed), app screenshots, and untouched photos (`plain`). Every engine reads every image
once with no noise rule; the rules are then scored on the stored lines:

- words are normalised as full-text search splits them (NFKC, lower case, letters/digits);
- `strict`: a read word counts when it equals a painted word of the same image (multisets);
- `joined`: also counts a read word that is two or three consecutive painted words run
  together ("kingscross"): what a query matches when search also tries adjacent query words
  joined (the integration note says how);
- `in-photos` sums signs, banners and overlays, `painted` every painted kind but the
  large copies (pages hold most of its words);
- words read in `plain` photos count as false in precision (some of those photos do hold a
  little real text, so this is a bound);
- ms per photo, wall and CPU (this process plus its children: tesseract runs as a process),
  split into photos with painted text and `plain` ones; the first image of each engine is
  a warm-up and not counted.

    python bench/ocr_eval.py [--engines rapid-960,rapid-640,...,tess-psm3,tess-psm11] [--json]

With --json the LAST line is one JSON object (the machine, each engine's figures at its best
rule and at the shipped rule, the rule grid).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import datasets_dir  # noqa: E402
from bench.machine import describe, describe_machine, print_figures  # noqa: E402
from bench.text_photos import TextPhoto, make_set  # noqa: E402
from services.caption.ocr import (  # noqa: E402
    LineReading,
    NoiseRule,
    RapidOcrEngine,
    normalise_words,
    spaced,
)
from shared.config import get_settings  # noqa: E402

RawLine = tuple[str, float]  # text, confidence 0-1 (tesseract: one word per "line")
# spacing rules scored on the same readings (services/caption/ocr.py `spaced`)
SPACE_RATIOS: tuple[float | None, ...] = (None, 1.3, 1.5, 1.7, 2.0)
CONFIDENCES = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
MIN_CHARS = (1, 2, 3)
SHIPPED = NoiseRule()


@dataclass
class EngineRun:
    """What one engine read in every image, and what it cost."""

    name: str
    lines: dict[str, list[RawLine]]
    wall_ms: dict[str, float]
    cpu_ms: dict[str, float]

    def spaced(self, readings: dict[str, list[LineReading]], ratio: float | None
               ) -> EngineRun:
        """The same run with rapid's readings spaced by `ratio`."""
        lines = {name: [(spaced(r.chars, r.columns, ratio), r.confidence) for r in found]
                 for name, found in readings.items()}
        label = f"{self.name}, space ratio {ratio}"
        return EngineRun(label, lines, self.wall_ms, self.cpu_ms)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def rapid_reader(det_side: int | None, *, probe_side: int | None = None, threads: int = 1
                 ) -> Callable[[Image.Image], list[RawLine] | list[LineReading]]:
    """The shipped engine at a detector size (None: the package's own call and defaults)."""
    if det_side is None:
        from rapidocr_onnxruntime import RapidOCR

        package = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1,
                           text_score=0.0)

        def read_package(image: Image.Image) -> list[RawLine]:
            found, _ = package(image)
            return [(str(text), float(score)) for _, text, score in (found or [])]

        return read_package
    # one image at a time on one stream: the figures are per photo (CPU ms is the cost; a
    # worker runs one stream per core side by side)
    engine = RapidOcrEngine(probe_side=probe_side, det_side=det_side, streams=1,
                            threads=threads, rule=NoiseRule(0.0, 0))
    return engine.readings


def tesseract_reader(psm: int) -> Callable[[Image.Image], list[RawLine]]:
    """Debian's tesseract 5 (`apt-get install tesseract-ocr`, English data), word by word."""
    binary = shutil.which("tesseract")
    if binary is None:
        raise FileNotFoundError("tesseract is not installed (apt-get install tesseract-ocr)")

    def read(image: Image.Image) -> list[RawLine]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        done = subprocess.run([binary, "stdin", "stdout", "--psm", str(psm), "-l", "eng", "tsv"],
                              input=buf.getvalue(), capture_output=True, check=True)
        rows = csv.DictReader(io.StringIO(done.stdout.decode("utf-8", "replace")),
                              delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["text"], float(row["conf"]) / 100) for row in rows
                if row.get("level") == "5" and (row.get("text") or "").strip()]

    return read


ENGINES: dict[str, Callable[[], Callable[[Image.Image], Any]]] = {
    "rapid-640+960": lambda: rapid_reader(960, probe_side=640),  # the shipped default
    "rapid-960": lambda: rapid_reader(960),
    "rapid-640": lambda: rapid_reader(640),
    "rapid-480": lambda: rapid_reader(480),
    "rapid-960-2threads": lambda: rapid_reader(960, threads=2),
    "rapid-package-default": lambda: rapid_reader(None),
    "tess-psm3": lambda: tesseract_reader(3),
    "tess-psm11": lambda: tesseract_reader(11),
}


def run_engine(name: str, photos: list[TextPhoto]) -> list[EngineRun]:
    """The engine over every photo; for the shipped engine, one run per spacing rule."""
    read = ENGINES[name]()
    images = {p.path.name: Image.open(p.path).convert("RGB") for p in photos}
    read(images[photos[0].path.name])  # warm-up: model load, first-run optimisation
    run = EngineRun(name, {}, {}, {})
    found: dict[str, Any] = {}
    for photo in photos:
        image = images[photo.path.name]
        wall, cpu = time.perf_counter(), cpu_seconds()
        found[photo.path.name] = read(image)
        run.wall_ms[photo.path.name] = (time.perf_counter() - wall) * 1e3
        run.cpu_ms[photo.path.name] = (cpu_seconds() - cpu) * 1e3
    if any(isinstance(r, LineReading) for rs in found.values() for r in rs):
        return [run.spaced(found, ratio) for ratio in SPACE_RATIOS]
    run.lines = found
    return [run]


def joined_credit(truth_lines: tuple[str, ...], left: Counter[str], word: str) -> int:
    """Painted words credited to one read word that is 2-3 consecutive painted words run
    together (taken out of `left`); 0 when it is not."""
    for n in (2, 3):
        for line in truth_lines:
            words = normalise_words(line)
            for i in range(len(words) - n + 1):
                run = words[i:i + n]
                need = Counter(run)
                if "".join(run) == word and all(left[w] >= c for w, c in need.items()):
                    left.subtract(need)
                    return n
    return 0


def score(photos: list[TextPhoto], run: EngineRun, rule: NoiseRule) -> dict[str, dict]:
    """Per kind (and `all` over painted kinds): words painted, read, matched strict/joined."""
    tallies: dict[str, Counter[str]] = {}
    for photo in photos:
        kept = [text for text, conf in run.lines[photo.path.name] if rule.keep(text, conf)]
        read = Counter(w for text in kept for w in normalise_words(text))
        truth = Counter(w for line in photo.lines for w in normalise_words(line))
        strict = sum((read & truth).values())
        left = truth - read
        joined_truth = joined_read = 0
        for word, count in (read - truth).items():
            for _ in range(count):
                got = joined_credit(photo.lines, left, word)
                if got:
                    joined_truth += got
                    joined_read += 1
        t = tallies.setdefault(photo.kind, Counter())
        t.update({"images": 1, "truth": sum(truth.values()), "read": sum(read.values()),
                  "strict": strict, "joined_truth": strict + joined_truth,
                  "joined_read": strict + joined_read,
                  "with_text": int(bool(read)),
                  "wall_ms": run.wall_ms[photo.path.name], "cpu_ms": run.cpu_ms[photo.path.name]})
    painted = Counter()
    for kind, t in tallies.items():
        if kind != "plain" and not kind.endswith("-large"):  # each painted image once
            painted.update(t)
    tallies["painted"] = painted
    # words in photos (signs, banners, overlays): pages would otherwise outweigh them
    tallies["in-photos"] = sum((tallies.get(k, Counter()) for k in ("sign", "banner", "overlay")),
                               Counter())
    out: dict[str, dict] = {}
    plain = tallies.get("plain", Counter())
    for kind, t in tallies.items():
        read_all = t["read"] + (plain["read"] if kind == "painted" else 0)
        out[kind] = {
            "images": t["images"],
            "recall": _ratio(t["strict"], t["truth"]),
            "precision": _ratio(t["strict"], t["read"]),
            "recall_joined": _ratio(t["joined_truth"], t["truth"]),
            "precision_joined": _ratio(t["joined_read"], t["read"]),
            # painted-word precision when plain photos' words count as false too
            "precision_joined_with_plain": _ratio(t["joined_read"], read_all),
            "words_per_image": round(t["read"] / t["images"], 2),
            "images_with_text": _ratio(t["with_text"], t["images"]),
            "wall_ms": round(t["wall_ms"] / t["images"], 1),
            "cpu_ms": round(t["cpu_ms"] / t["images"], 1),
        }
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(100 * a / b, 1) if b else None


def best_rule(photos: list[TextPhoto], run: EngineRun) -> tuple[NoiseRule, dict[str, dict]]:
    """The rule with the best F1 of joined recall and precision counting plain photos' words."""
    def f1(s: dict[str, dict]) -> float:
        r, p = s["painted"]["recall_joined"] or 0, s["painted"]["precision_joined_with_plain"] or 0
        return 2 * r * p / (r + p) if r + p else 0.0

    scored = [(NoiseRule(c, m), score(photos, run, NoiseRule(c, m)))
              for c in CONFIDENCES for m in MIN_CHARS]
    return max(scored, key=lambda pair: f1(pair[1]))


def table(label: str, scores: dict[str, dict]) -> None:
    print(f"\n{label}")
    print(f"{'kind':<11} {'n':>3} {'recall':>7} {'prec':>6} {'R join':>7} {'P join':>7} "
          f"{'P+plain':>8} {'words/img':>9} {'any text':>8} {'wall ms':>8} {'cpu ms':>7}")
    for kind in ("sign", "banner", "overlay", "document", "screenshot", "sign-large",
                 "in-photos", "painted", "plain", "plain-large"):
        s = scores.get(kind)
        if s is None:
            continue
        print(f"{kind:<11} {s['images']:>3} {_fmt(s['recall']):>7} {_fmt(s['precision']):>6} "
              f"{_fmt(s['recall_joined']):>7} {_fmt(s['precision_joined']):>7} "
              f"{_fmt(s['precision_joined_with_plain']):>8} {s['words_per_image']:>9} "
              f"{_fmt(s['images_with_text']):>8} {s['wall_ms']:>8} {s['cpu_ms']:>7}")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=None, help="where the set is written "
                        "(default: CAPSEARCH_CACHE_DIR/ocr-eval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    out = args.out or settings.cache_dir / "ocr-eval"
    datasets = datasets_dir(settings)
    photos = make_set(out, datasets, seed=args.seed)
    print(f"machine: {describe()}")
    print(f"set: {len(photos)} images in {out} "
          f"({dict(Counter(p.kind for p in photos))}), seed {args.seed}")
    results: dict[str, dict] = {}
    # tesseract's own threads: one per usable core at most (its default is up to 4)
    os.environ.setdefault("OMP_THREAD_LIMIT", str(describe_machine()["cores"]))
    for name in args.engines.split(","):
        for run in run_engine(name, photos):
            rule, best = best_rule(photos, run)
            shipped = score(photos, run, SHIPPED)
            raw = score(photos, run, NoiseRule(0.0, 0))
            table(f"{run.name}: no noise rule ({describe()})", raw)
            table(f"{run.name}: best rule {rule}", best)
            if rule != SHIPPED:
                table(f"{run.name}: shipped rule {SHIPPED}", shipped)
            results[run.name] = {"best_rule": {"min_confidence": rule.min_confidence,
                                               "min_chars": rule.min_chars},
                                 "best": best, "shipped": shipped, "raw": raw}
    print_figures({"machine": describe_machine(), "set": {"images": len(photos),
                   "seed": args.seed}, "engines": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
