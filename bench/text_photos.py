"""A generated evaluation set for OCR: words painted into real photos, rendered pages and
screenshots, and untouched photos (for false text and the cost of a photo without text).

Kinds (counts are `make_set` defaults):
- `sign`: a coloured board with 1-3 lines on a photo, sometimes tilted or in perspective;
- `banner`: a shop-front band across the top or bottom of a photo;
- `overlay`: white text with a dark outline straight on the photo (no board);
- `document`: a page of text, sometimes photographed (tilted, in perspective, on a photo);
- `screenshot`: a rendered app window with a title bar, buttons and a list;
- `plain`: a real photo as it is (its true text is unknown: whatever is read is counted);
- `sign-large`, `plain-large`: copies of the first signs and plain photos scaled up to a
  1920 px long side (no new detail, but the size of a camera upload: what detection costs).

Fonts: every DejaVu / Liberation TrueType font found (Debian `fonts-dejavu-core`,
`fonts-liberation`), else Pillow's built-in one. The photos come from the datasets folder
(flickr8k-dev, coco-mini-val); nothing here is written into the repository.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
SET_VERSION = 2
# camera-sized copies: the long side real uploads have, where the detector's bound matters
LARGE_SIDE = 1920

PLACES = """london paris berlin madrid rome oxford cambridge victoria waterloo paddington euston
brighton glasgow leeds bristol york dover kings cross central harbour bridge park garden
market castle abbey hill valley river lake north south east west""".split()
SIGN_WORDS = """platform exit entrance station street road avenue lane square hotel cafe pizza
books bakery pharmacy open closed sale parking entry library museum gallery bus stop train
tickets welcome fresh flowers coffee bar restaurant grocery barber tailor hardware cinema
theatre arrivals departures gate terminal toilets information police taxi school hospital
fire keep left right slow danger private office bank post cash only no smoking""".split()
WORDS = """the of and to in is that it was for on are with as his they be at one have this
from or had by word but what some we can out other were all there when up use your how said
an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most
people my over know water than call first who may down side been now find any new work part
take get place made live where after back little only round man year came show every good me
give our under name very through just form sentence great think say help low line differ turn
cause much mean before move right boy old too same tell does set three want air well also play
small end put home read hand port large spell add even land here must big high such follow act
why ask men change went light kind off need house picture try us again animal point mother
world near build self earth father head stand own page should country found answer school grow
study still learn plant cover food sun four between state keep eye never last let thought city
tree cross farm hard start might story saw far sea draw left late run while press close night
real life few north""".split()
# (text, board) colour pairs that signs and banners use
COLOURS = [((255, 255, 255), (20, 60, 140)), ((255, 255, 255), (0, 110, 60)),
           ((255, 255, 255), (170, 20, 30)), ((255, 255, 255), (25, 25, 25)),
           ((20, 20, 20), (250, 210, 0)), ((20, 20, 20), (245, 245, 240)),
           ((250, 230, 180), (90, 50, 20))]


@dataclass(frozen=True)
class TextPhoto:
    """One image of the set: its file, kind, and the lines of text painted into it."""

    path: Path
    kind: str
    lines: tuple[str, ...]


def fonts() -> list[Path]:
    """The TrueType fonts the set draws with (empty: Pillow's built-in font)."""
    return sorted(p for d in FONT_DIRS if d.is_dir() for p in d.glob("*.ttf")
                  if "Math" not in p.name and "ExtraLight" not in p.name)


def font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size)


def source_photos(datasets: Path) -> list[Path]:
    """The real photos to paint on and to keep plain (flickr8k-dev + coco-mini-val)."""
    photos: list[Path] = []
    for name in ("flickr8k-dev", "coco-mini-val"):
        photos += sorted((datasets / name / "images").glob("*.jpg"))
    return photos


def make_set(out: Path, datasets: Path, *, seed: int = 0, signs: int = 30, banners: int = 10,
             overlays: int = 10, documents: int = 6, screenshots: int = 4,
             plain: int = 60, large: int = 10) -> list[TextPhoto]:
    """Write the set into `out` (once; reused while `truth.json` is there) and list it."""
    truth = out / "truth.json"
    if truth.is_file():
        stored = json.loads(truth.read_text())
        if stored.get("version") == SET_VERSION and stored.get("seed") == seed:
            return [TextPhoto(out / r["file"], r["kind"], tuple(r["lines"]))
                    for r in stored["photos"]]
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    photos = source_photos(datasets)
    if len(photos) < signs + banners + overlays + documents + plain:
        raise FileNotFoundError(f"too few photos under {datasets}")
    picked = rng.sample(photos, len(photos))
    faces = fonts() or [None]
    items: list[TextPhoto] = []
    plan = ([("sign", sign)] * signs + [("banner", banner)] * banners
            + [("overlay", overlay)] * overlays + [("document", document)] * documents
            + [("screenshot", screenshot)] * screenshots)
    for i, (kind, paint) in enumerate(plan):
        base = Image.open(picked[i]).convert("RGB")
        image, lines = paint(base, rng, faces)
        suffix = ".png" if kind == "screenshot" else ".jpg"
        path = out / f"{i:03d}-{kind}{suffix}"
        image.save(path, quality=90) if suffix == ".jpg" else image.save(path)
        items.append(TextPhoto(path, kind, tuple(lines)))
    for j, photo in enumerate(picked[len(plan):len(plan) + plain]):
        path = out / f"{len(plan) + j:03d}-plain.jpg"
        path.write_bytes(photo.read_bytes())
        items.append(TextPhoto(path, "plain", ()))
    for kind in ("sign", "plain"):
        for photo in [p for p in items if p.kind == kind][:large]:
            image = Image.open(photo.path).convert("RGB")
            scale = LARGE_SIDE / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)),
                                 Image.Resampling.BICUBIC)
            path = out / f"{len(items):03d}-{kind}-large.jpg"
            image.save(path, quality=90)
            items.append(TextPhoto(path, f"{kind}-large", photo.lines))
    truth.write_text(json.dumps({"version": SET_VERSION, "seed": seed, "photos": [
        {"file": p.path.name, "kind": p.kind, "lines": list(p.lines)} for p in items]}))
    return items


def _phrase(rng: random.Random, n: int) -> str:
    pool = [*PLACES, *SIGN_WORDS]
    words = [rng.choice(pool) for _ in range(n)]
    if rng.random() < 0.3:
        words.append(str(rng.randint(1, 99)))
    return " ".join(words)


def _case(rng: random.Random, text: str) -> str:
    return rng.choice([text.upper(), text.upper(), text.title()])


def _board(lines: Sequence[str], face: Path | None, size: int, fg: tuple[int, int, int],
           bg: tuple[int, int, int] | None, stroke: int = 0) -> Image.Image:
    """An RGBA board with the lines centred on it (transparent where `bg` is None)."""
    f = font(face, size)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    boxes = [probe.textbbox((0, 0), line, font=f, stroke_width=stroke) for line in lines]
    width = max(b[2] - b[0] for b in boxes) + size
    line_h = int(size * 1.3)
    height = line_h * len(lines) + size // 2
    board = Image.new("RGBA", (width, height), (*bg, 255) if bg else (0, 0, 0, 0))
    draw = ImageDraw.Draw(board)
    for k, (line, box) in enumerate(zip(lines, boxes, strict=True)):
        x = (width - (box[2] - box[0])) // 2 - box[0]
        draw.text((x, size // 4 + k * line_h - box[1] + (line_h - size) // 2), line, font=f,
                  fill=(*fg, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    return board


def _perspective(layer: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    """The layer as if seen a little from the side: each corner moved by up to `amount`."""
    w, h = layer.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(x + rng.uniform(-amount, amount) * w, y + rng.uniform(-amount, amount) * h)
           for x, y in src]
    shift_x, shift_y = -min(x for x, _ in dst), -min(y for _, y in dst)
    dst = [(x + shift_x, y + shift_y) for x, y in dst]
    size = (int(max(x for x, _ in dst)) + 1, int(max(y for _, y in dst)) + 1)
    rows = []
    for (xs, ys), (xd, yd) in zip(src, dst, strict=True):  # output → input mapping
        rows.append([xd, yd, 1, 0, 0, 0, -xs * xd, -xs * yd])
        rows.append([0, 0, 0, xd, yd, 1, -ys * xd, -ys * yd])
    rhs = np.array([c for point in src for c in point], dtype=np.float64)
    coeffs = np.linalg.solve(np.array(rows, dtype=np.float64), rhs)
    return layer.transform(size, Image.Transform.PERSPECTIVE, tuple(coeffs),
                           Image.Resampling.BICUBIC)


def _place(base: Image.Image, layer: Image.Image, rng: random.Random) -> Image.Image:
    if layer.width > base.width * 0.95 or layer.height > base.height * 0.9:
        scale = min(base.width * 0.95 / layer.width, base.height * 0.9 / layer.height)
        layer = layer.resize((max(1, int(layer.width * scale)), max(1, int(layer.height * scale))),
                             Image.Resampling.LANCZOS)
    x = rng.randint(0, base.width - layer.width)
    y = rng.randint(0, base.height - layer.height)
    out = base.copy()
    out.paste(layer, (x, y), layer)
    return out


def sign(base: Image.Image, rng: random.Random, faces: list) -> tuple[Image.Image, list[str]]:
    lines = [_case(rng, _phrase(rng, rng.randint(1, 2))) for _ in range(rng.randint(1, 3))]
    fg, bg = rng.choice(COLOURS)
    layer = _board(lines, rng.choice(faces), rng.randint(16, 44), fg, bg)
    if rng.random() < 0.4:
        layer = layer.rotate(rng.uniform(-12, 12), Image.Resampling.BICUBIC, expand=True)
    if rng.random() < 0.3:
        layer = _perspective(layer, rng, 0.08)
    return _place(base, layer, rng), lines


def banner(base: Image.Image, rng: random.Random, faces: list) -> tuple[Image.Image, list[str]]:
    line = _case(rng, _phrase(rng, rng.randint(1, 3)))
    fg, bg = rng.choice(COLOURS)
    size = rng.randint(26, 56)
    layer = _board([line], rng.choice(faces), size, fg, bg)
    band = Image.new("RGBA", (base.width, layer.height), (*bg, 255))
    if layer.width > band.width:
        layer = layer.resize((band.width, int(layer.height * band.width / layer.width)),
                             Image.Resampling.LANCZOS)
    band.paste(layer, ((band.width - layer.width) // 2, 0), layer)
    out = base.copy()
    out.paste(band, (0, 0 if rng.random() < 0.6 else base.height - band.height), band)
    return out, [line]


def overlay(base: Image.Image, rng: random.Random, faces: list) -> tuple[Image.Image, list[str]]:
    lines = [_case(rng, " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))))
             for _ in range(rng.randint(1, 2))]
    size = rng.randint(18, 40)
    layer = _board(lines, rng.choice(faces), size, (255, 255, 255), None,
                   stroke=max(1, size // 12))
    return _place(base, layer, rng), lines


def _sentences(rng: random.Random, n_lines: int, words_per_line: tuple[int, int]) -> list[str]:
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(*words_per_line))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", "", ",", ""]))
    return lines


def document(base: Image.Image, rng: random.Random, faces: list
             ) -> tuple[Image.Image, list[str]]:
    size = rng.randint(15, 22)
    face = rng.choice(faces)
    title = " ".join(w.capitalize() for w in rng.sample(WORDS, 3))
    body = _sentences(rng, rng.randint(10, 16), (5, 9))
    f_title, f_body = font(face, int(size * 1.5)), font(face, size)
    page = Image.new("RGB", (int(size * 40), int(size * 1.6 * (len(body) + 4))),
                     rng.choice([(255, 255, 255), (250, 246, 235)]))
    draw = ImageDraw.Draw(page)
    draw.text((size * 2, size), title, font=f_title, fill=(10, 10, 10))
    for k, line in enumerate(body):
        draw.text((size * 2, int(size * (3.6 + 1.6 * k))), line, font=f_body, fill=(30, 30, 30))
    if rng.random() < 0.5:  # a screen capture of the page
        return page, [title, *body]
    layer = page.convert("RGBA").rotate(rng.uniform(-4, 4), Image.Resampling.BICUBIC,
                                        expand=True)
    layer = _perspective(layer, rng, 0.04)
    canvas = base.resize((int(layer.width * 1.15), int(layer.height * 1.15)))
    return _place(canvas, layer, rng), [title, *body]


def screenshot(base: Image.Image, rng: random.Random, faces: list
               ) -> tuple[Image.Image, list[str]]:
    del base  # rendered from nothing
    face = rng.choice(faces)
    width, height = 1024, 640
    shot = Image.new("RGB", (width, height), (238, 238, 240))
    draw = ImageDraw.Draw(shot)
    title = " ".join(w.capitalize() for w in rng.sample(SIGN_WORDS, 2)) + " Settings"
    draw.rectangle((0, 0, width, 44), fill=(45, 50, 60))
    draw.text((16, 10), title, font=font(face, 20), fill=(255, 255, 255))
    lines = [title]
    buttons = [w.capitalize() for w in rng.sample(["save", "cancel", "open", "delete", "share",
                                                  "print", "search", "upload", "help"], 3)]
    for k, label in enumerate(buttons):
        x = 16 + k * 130
        draw.rounded_rectangle((x, 60, x + 115, 96), radius=6, fill=(60, 110, 200))
        draw.text((x + 14, 68), label, font=font(face, 16), fill=(255, 255, 255))
    lines.append(" ".join(buttons))
    for k, line in enumerate(_sentences(rng, 12, (3, 6))):
        y = 120 + k * 40
        draw.line((16, y + 34, width - 16, y + 34), fill=(210, 210, 215))
        draw.text((24, y + 8), line, font=font(face, rng.randint(14, 17)), fill=(20, 20, 25))
        lines.append(line)
    return shot, lines
