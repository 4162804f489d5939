"""`capsearch image ID`: one photo's record: caption, the text read in it, status, file."""

from __future__ import annotations

import argparse

from capsearch.client import CapsearchClient
from shared.config import get_settings
from shared.schemas import ImagePublic


def print_image(image: ImagePublic) -> None:
    print(f"image {image.id}: {image.filename} ({image.width}x{image.height} {image.format}, "
          f"{image.status}{': ' + image.error if image.error else ''})")
    print(f"  source   {image.source}")
    print(f"  caption  {image.caption or '(none yet)'}")
    if image.ocr_text is None:
        print("  text     (not read yet)")
    elif not image.ocr_text:
        print("  text     (none found)")
    else:
        confidence = (f" (confidence {image.ocr_confidence:.2f})"
                      if image.ocr_confidence is not None else "")
        lines = image.ocr_text.splitlines()
        print(f"  text     {lines[0]}{confidence if len(lines) == 1 else ''}")
        for line in lines[1:]:
            print(f"           {line}")
        if len(lines) > 1 and confidence:
            print(f"          {confidence}")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.url or settings.url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    with CapsearchClient(url, api_key=key) as client:
        image = client.image(args.image_id)
    if args.json:
        print(image.model_dump_json())
    else:
        print_image(image)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="show one photo: caption, text read in it, status")
    p.add_argument("image_id", type=int, metavar="ID")
    p.add_argument("--url", default=None, help="gateway URL (default: CAPSEARCH_URL)")
    p.add_argument("--json", action="store_true", help="print the raw JSON record")
    p.set_defaults(func=run)
