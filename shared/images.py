"""Checking, decoding and thumbnailing uploaded image bytes (the one place PIL is trusted)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from shared.capture import taken_at_of
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
    taken_at: datetime | None = None  # EXIF capture date (shared/capture.py)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Sniff the real format, refuse bombs before a full decode, then decode fully once."""
    checked, _ = _checked(data, max_bytes=max_bytes, max_pixels=max_pixels, thumbnail_px=None)
    return checked


def check_with_thumbnail(data: bytes, *, max_bytes: int, max_pixels: int, thumbnail_px: int
                         ) -> tuple[CheckedImage, bytes]:
    """`check_image` and `make_thumbnail` from one decode (the upload path): the thumbnail's
    decode is the check, a JPEG decoding at the reduced scale the thumbnail needs."""
    checked, thumb = _checked(data, max_bytes=max_bytes, max_pixels=max_pixels,
                              thumbnail_px=thumbnail_px)
    assert thumb is not None
    return checked, thumb


def _checked(data: bytes, *, max_bytes: int, max_pixels: int, thumbnail_px: int | None
             ) -> tuple[CheckedImage, bytes | None]:
    if not data:
        raise InvalidImage("the file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    thumb = None
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
            taken_at = taken_at_of(img)  # from the header's metadata: every path in reads it
            if thumbnail_px is None:
                img.load()  # a truncated or corrupt file fails here, not in the worker
        if thumbnail_px is not None:  # decodes every byte too: the same check
            thumb = make_thumbnail(data, thumbnail_px)
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
        taken_at=taken_at,
    ), thumb


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled into 0..255 (a plain convert would clip them white)."""
    import numpy as np

    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            arr = arr * 255.0
    elif img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255.0:
        arr = arr / 257.0  # 0..65535 -> 0..255
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info


def decode_rgb(data: bytes, *, draft_px: int | None = None) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, first frame only, alpha over
    white, CMYK/palette/greyscale converted, 16-bit and float scaled (not clipped) to 8 bits.

    `draft_px` lets a JPEG decode at a reduced scale no smaller than that (for thumbnails).
    """
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        if draft_px is not None and img.format == "JPEG":
            img.draft("RGB", (draft_px, draft_px))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            img = _to_8bit(img)
        if _has_alpha(img):
            rgba = img.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return img.convert("RGB")


def make_thumbnail(data: bytes, max_px: int) -> bytes:
    """A JPEG no larger than max_px on its long side, for result grids (bicubic: at the
    1.5-3x reductions of ordinary photos it looks like Lanczos, for less CPU per upload)."""
    img = decode_rgb(data, draft_px=max_px)
    img.thumbnail((max_px, max_px), Image.Resampling.BICUBIC)
    # pixels only: comments, EXIF and XMP of the upload stay with the original (a GIF comment
    # would otherwise become the JPEG's, text the grid serves); the ICC profile keeps colours
    icc = img.info.get("icc_profile")
    img.info = {}
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85, optimize=True, **({"icc_profile": icc} if icc
                                                                  else {}))
    return out.getvalue()
