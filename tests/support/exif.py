"""Photos with (or without) an EXIF capture date, made with Pillow, for the capture-date tests."""

from __future__ import annotations

import io

from PIL import Image

from shared.capture import DATETIME_ORIGINAL, EXIF_IFD, OFFSET_TIME_ORIGINAL


def jpeg_taken(taken: str | bytes | None, offset: str | None = None, *,
               seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small JPEG whose Exif IFD holds DateTimeOriginal `taken` (and OffsetTimeOriginal
    `offset`); `taken=None`: no EXIF at all. `seed` makes the pixels (and the sha256) differ."""
    img = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    img.putpixel((seed % size[0], 0), (255, 255, 255))
    out = io.BytesIO()
    if taken is None:
        img.save(out, format="JPEG", quality=90)
        return out.getvalue()
    exif = Image.Exif()
    tags = exif.get_ifd(EXIF_IFD)
    tags[DATETIME_ORIGINAL] = taken
    if offset is not None:
        tags[OFFSET_TIME_ORIGINAL] = offset
    img.save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()
