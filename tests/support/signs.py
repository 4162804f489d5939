"""Photos with a sign painted into them, for the tests of text in photos (OCR)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

FONT_NAME = "DejaVuSans-Bold.ttf"
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts"))


def sign_font() -> Path:
    """A bold TTF on this machine: the system's DejaVu, else matplotlib's bundled copy."""
    for folder in FONT_DIRS:
        found = sorted(folder.rglob(FONT_NAME)) if folder.is_dir() else []
        if found:
            return found[0]
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_NAME
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    pytest.skip(f"no {FONT_NAME} on this machine")


def sign_photo(photo: Path, lines: list[str]) -> bytes:
    """The photo as a JPEG with a large light sign in its middle reading `lines` in dark
    bold letters (the way a station sign reads)."""
    image = Image.open(photo).convert("RGB")
    width, height = image.size
    draw = ImageDraw.Draw(image)
    left, top = int(width * 0.12), int(height * 0.25)
    right, bottom = int(width * 0.88), int(height * 0.75)
    draw.rectangle((left, top, right, bottom), fill=(238, 236, 226))
    size = int((bottom - top) / (len(lines) * 2.0))
    font = ImageFont.truetype(str(sign_font()), size)
    while size > 8 and max(draw.textlength(line, font=font) for line in lines) > (
            right - left) * 0.9:
        size -= 2
        font = ImageFont.truetype(str(sign_font()), size)
    y = top + size // 2
    for line in lines:
        text_width = draw.textlength(line, font=font)
        draw.text((left + (right - left - text_width) / 2, y), line, font=font,
                  fill=(25, 25, 30))
        y += int(size * 1.6)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()
