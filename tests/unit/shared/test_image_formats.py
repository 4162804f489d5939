"""Every kind of photo people have decodes upright, in RGB, with sensible colours."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from shared.errors import InvalidImage, PayloadTooLarge
from shared.images import check_image, decode_rgb, make_thumbnail

CAPS = {"max_bytes": 10_000_000, "max_pixels": 10_000_000}
W, H = 60, 40


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def gradient() -> Image.Image:
    """Left half dark, right half bright, so a rotation or a clipped range is visible."""
    arr = np.zeros((H, W, 3), dtype=np.uint8)
    arr[:, W // 2:] = 220
    arr[:, : W // 2] = 30
    return Image.fromarray(arr)


def sixteen_bit() -> Image.Image:
    return Image.fromarray(np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16))


def animated(fmt: str) -> bytes:
    first, second = gradient(), Image.new("RGB", (W, H), (0, 0, 255))
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    return encode(gradient(), "JPEG", exif=exif.tobytes())


CASES: dict[str, Callable[[], bytes]] = {
    "progressive jpeg": lambda: encode(gradient(), "JPEG", progressive=True, quality=90),
    "cmyk jpeg": lambda: encode(gradient().convert("CMYK"), "JPEG", quality=90),
    "greyscale jpeg": lambda: encode(gradient().convert("L"), "JPEG", quality=90),
    "16-bit png": lambda: encode(sixteen_bit(), "PNG"),
    "16-bit tiff": lambda: encode(sixteen_bit(), "TIFF"),
    "float tiff": lambda: encode(Image.fromarray(
        np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)), "TIFF"),
    "palette png": lambda: encode(gradient().convert("P"), "PNG"),
    "palette png with transparency": lambda: encode(gradient().convert("P"), "PNG",
                                                    transparency=0),
    "rgba png": lambda: encode(gradient().convert("RGBA"), "PNG"),
    "greyscale+alpha png": lambda: encode(gradient().convert("LA"), "PNG"),
    "1-bit png": lambda: encode(gradient().convert("1"), "PNG"),
    "animated gif": lambda: animated("GIF"),
    "animated webp": lambda: animated("WEBP"),
    "cmyk tiff": lambda: encode(gradient().convert("CMYK"), "TIFF"),
    "bmp": lambda: encode(gradient(), "BMP"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decodes_to_rgb_of_the_right_size(name: str) -> None:
    data = CASES[name]()
    checked = check_image(data, **CAPS)
    img = decode_rgb(data)
    assert img.mode == "RGB" and img.size == (checked.width, checked.height) == (W, H)
    thumb = Image.open(io.BytesIO(make_thumbnail(data, 32)))
    assert thumb.format == "JPEG" and max(thumb.size) <= 32


@pytest.mark.parametrize("name", ["16-bit png", "16-bit tiff", "float tiff"])
def test_high_bit_depth_is_scaled_not_clipped(name: str) -> None:
    arr = np.asarray(decode_rgb(CASES[name]()), dtype=np.float64)
    assert 100 < arr.mean() < 155  # a 0..max ramp averages mid-grey; clipping gives ~255 or 0
    assert arr.min() < 10 and arr.max() > 245


def test_first_frame_of_an_animation_is_used() -> None:
    for fmt in ("GIF", "WEBP"):
        arr = np.asarray(decode_rgb(animated(fmt)), dtype=np.float64)
        assert arr[:, : W // 2].mean() < 80 and arr[:, W // 2:].mean() > 170  # not the blue one


def test_exif_orientation_is_applied() -> None:
    img = decode_rgb(exif_rotated())
    assert img.size == (H, W)  # turned upright: portrait
    arr = np.asarray(img, dtype=np.float64)
    assert arr[: W // 2].mean() < 80 and arr[W // 2:].mean() > 170  # dark half now on top


def test_alpha_is_flattened_onto_white() -> None:
    clear = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    assert np.asarray(decode_rgb(encode(clear, "PNG"))).min() == 255


def test_format_is_sniffed_from_the_bytes_not_the_name() -> None:
    png = encode(gradient(), "PNG")
    assert check_image(png, **CAPS).format == "PNG"
    assert check_image(encode(gradient(), "GIF"), **CAPS).content_type == "image/gif"


@pytest.mark.parametrize("data", [
    b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    b"<html><body>hello</body></html>",
    b"\xff\xd8\xff\xe0" + b"garbage" * 100,  # a JPEG signature and nothing behind it
    b"%PDF-1.4 not a photo",
    b"\x00" * 1000,
])
def test_non_images_and_forged_signatures_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        check_image(data, **CAPS)


def test_a_pixel_bomb_is_refused_from_its_header_without_decoding() -> None:
    # a real 1-pixel-high JPEG encoder can't make 50k x 50k cheaply; a GIF header can
    header = b"GIF89a" + (50_000).to_bytes(2, "little") + (50_000).to_bytes(2, "little")
    data = header + b"\xf7\x00\x00" + b"\x00" * 768 + b",\x00\x00\x00\x00" + header[6:10] + \
        b"\x00\x02\x02D\x01\x00;"
    start = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        check_image(data, max_bytes=10_000_000, max_pixels=60_000_000)
    assert time.perf_counter() - start < 0.5


def test_a_file_over_the_byte_cap_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        check_image(b"\xff" * 2_000, max_bytes=1_000, max_pixels=10**9)


def test_one_decode_checks_and_thumbnails_an_upload() -> None:
    from shared.images import check_with_thumbnail

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3),
                                                              dtype=np.uint8))
    data = encode(photo, "JPEG", quality=90)
    checked, thumb = check_with_thumbnail(data, thumbnail_px=100, **CAPS)
    assert (checked.format, checked.width, checked.height) == ("JPEG", 1200, 900)
    assert max(Image.open(io.BytesIO(thumb)).size) == 100
    # the reduced-scale decode still reads every byte: a truncated file is refused
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        check_with_thumbnail(data[: len(data) // 2], thumbnail_px=100, **CAPS)
    with pytest.raises(PayloadTooLarge):
        check_with_thumbnail(data, thumbnail_px=100, max_bytes=10_000_000, max_pixels=1000)
