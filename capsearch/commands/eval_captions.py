"""`capsearch eval captions`: BLEU-1..4 and CIDEr-D of a captioner against human captions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capsearch.files import find_images, read_captions
from services.caption.captioners import build_captioner
from services.caption.training.caption_metrics import score_captions
from services.caption.training.progress import progress_bar
from shared.config import get_settings
from shared.devices import set_torch_threads
from shared.images import decode_rgb
from shared.logging import configure_logging


def run_captions(args: argparse.Namespace) -> int:
    base = get_settings()
    configure_logging("WARNING", json_logs=False)
    set_torch_threads(base.torch_threads)
    settings = base.model_copy(update={"captioner": args.captioner} if args.captioner else {})
    references = read_captions(args.captions)
    files = [f for f in find_images([args.images]) if f.name in references]
    if args.max_images:
        files = files[:args.max_images]
    if not files:
        raise FileNotFoundError(f"no image of {args.images} has a caption in {args.captions}")
    captioner = build_captioner(settings.captioner, settings)
    captioner.load()
    generated: list[str] = []
    step = captioner.batch_size
    with progress_bar(total=len(files), desc=f"captioning ({settings.captioner})",
                  unit="photo") as bar:
        for start in range(0, len(files), step):
            chunk = files[start:start + step]
            generated.extend(captioner.caption([decode_rgb(f.read_bytes()) for f in chunk]))
            bar.update(len(chunk))
    scores = score_captions(generated, [references[f.name] for f in files])
    b1, b2, b3, b4 = scores.bleu
    print(f"captioner {settings.captioner} ({captioner.version}): {scores.n} photos of "
          f"{args.images}")
    for f, caption in list(zip(files, generated, strict=True))[:args.show]:
        print(f"  {f.name}: {caption}")
    print(f"BLEU-1 {b1:.1f}  BLEU-2 {b2:.1f}  BLEU-3 {b3:.1f}  BLEU-4 {b4:.1f}  "
          f"CIDEr-D {scores.cider:.1f}")
    if args.json:
        print(json.dumps({**scores.as_dict(), "captioner": settings.captioner}))
    return 0


def add_parser(eval_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = eval_sub.add_parser("captions", help="BLEU-1..4 and CIDEr-D against human captions")
    c.add_argument("--images", type=Path, required=True)
    c.add_argument("--captions", type=Path, required=True,
                   help="TSV `image<TAB>caption` (several rows per image)")
    c.add_argument("--captioner", default=None, help="override CAPSEARCH_CAPTIONER")
    c.add_argument("--max-images", type=int, default=None, help="score at most N photos")
    c.add_argument("--show", type=int, default=5, help="print the first N captions")
    c.add_argument("--json", action="store_true", help="last line: one JSON object")
    c.set_defaults(func=run_captions)
