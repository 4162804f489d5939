"""Checking, decoding and thumbnailing uploaded image bytes (the one place PIL is trusted)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from shared.errors import InvalidImage, PayloadTooLarge

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class CheckedImage:
    """Bytes that decode as an allowed image within the caps, with what we learned."""

    data: bytes
    sha256: str
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Sniff the real format, refuse bombs before a full decode, then decode fully once."""
    if not data:
        raise InvalidImage("the file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    try:
        # Image.open reads only the header: the pixel cap is checked before any decoding
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").upper()
            if fmt not in ALLOWED_FORMATS:
                raise InvalidImage(
                    f"format {fmt or 'unknown'} is not allowed; use one of "
                    f"{', '.join(sorted(ALLOWED_FORMATS))}"
                )
            width, height = img.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"the image has {width}x{height} pixels; the limit is {max_pixels}"
                )
            img.load()  # a truncated or corrupt file fails here, not in the worker
    except (InvalidImage, PayloadTooLarge):
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"the image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage("the bytes are not an image format we can decode") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image is corrupt or truncated: {exc}") from None
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        width=width,
        height=height,
    )


def decode_rgb(data: bytes) -> Image.Image:
    """Decode to an upright RGB image (EXIF orientation applied, first frame, no alpha)."""
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return img.convert("RGB")


def make_thumbnail(data: bytes, max_px: int) -> bytes:
    """A JPEG no larger than max_px on its long side, for result grids."""
    img = decode_rgb(data)
    img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()
