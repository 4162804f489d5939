"""`capsearch image ID`: one photo's record, the text read in it included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capsearch.cli import build_parser
from capsearch.commands.image import print_image
from shared.schemas import ImagePublic


def record(**fields: object) -> ImagePublic:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    base: dict[str, object] = dict(
        id=7, sha256="ab" * 32, status="indexed", caption="a train in a station",
        filename="station.jpg", source="upload", format="JPEG", width=640, height=480,
        size_bytes=1000, created_at=now, updated_at=now, content_url="/c", thumbnail_url="/t",
        status_url="/s")
    return ImagePublic.model_validate(base | fields)


def test_the_text_read_in_the_photo_is_printed_line_by_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_image(record(ocr_text="PLATFORM 9\nKINGS CROSS", ocr_confidence=0.96))
    out = capsys.readouterr().out
    assert "caption  a train in a station" in out
    assert "text     PLATFORM 9\n           KINGS CROSS\n" in out
    assert "confidence 0.96" in out


@pytest.mark.parametrize(("text", "shown"), [(None, "(not read yet)"), ("", "(none found)")])
def test_a_photo_not_read_or_without_text_says_so(text: str | None, shown: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    print_image(record(ocr_text=text))
    assert f"text     {shown}" in capsys.readouterr().out


def test_the_command_takes_an_id() -> None:
    args = build_parser().parse_args(["image", "7", "--json"])
    assert (args.image_id, args.json) == (7, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["image", "seven"])
