"""CPU cost of the caption decoder's beam search, per photo, as the caption worker runs it.

The shipped transformer decoder (or `--checkpoint`) captions the CNN regions of `--photos`
photos in batches of `--batch` (the worker's micro-batch split over its streams: 32 over 2
streams = 16), on one torch thread (each stream has one), beam width `--beam`. The regions
are computed once, before timing. Prints CPU ms per photo (best of `--rounds`), the mean
caption length and a digest of the captions (the same digest = the same captions: a faster
search must not change what it finds).

    python bench/decoder_bench.py [--photos 64] [--batch 16] [--beam 3] [--json]

Runs from any checkout: `--repo DIR` imports the decoder of that checkout instead, so two
versions compare in one run (`--repo` of the other, rounds interleaved by calling twice).
With --json the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import datasets_dir  # noqa: E402
from machine import describe_machine, machine_line, print_figures  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=None,
                        help="photo folder (default: the datasets' flickr8k-dev/images)")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose decoder and beam search run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))

    import torch

    from services.caption.captioners.sat import TransformerCaptioner
    from services.caption.sat.beam import beam_search
    from shared.config import get_settings
    from shared.images import decode_rgb

    settings = get_settings().model_copy(update={
        "device": "cpu", "sat_beam_width": args.beam, "transformer_checkpoint": args.checkpoint})
    folder = args.images or datasets_dir(settings) / "flickr8k-dev" / "images"
    files = sorted(folder.glob("*.jpg"))[:args.photos]
    captioner = TransformerCaptioner.from_settings(settings)
    captioner.load()
    assert captioner._sat is not None  # noqa: SLF001 (the loaded decoder and vocabulary)
    model, vocab = captioner._sat.model, captioner._sat.vocab  # noqa: SLF001
    regions = torch.cat([captioner.backbone.forward([decode_rgb(f.read_bytes())
                                                     for f in files[i:i + 32]]).regions()
                         for i in range(0, len(files), 32)])
    torch.set_num_threads(1)
    best, captions = float("inf"), []
    for _ in range(args.rounds):
        start = time.process_time()
        captions = [vocab.decode(seq) for i in range(0, len(files), args.batch)
                    for seq in beam_search(model, regions[i:i + args.batch],
                                           beam_width=args.beam)]
        best = min(best, (time.process_time() - start) / len(files) * 1000)
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()[:12]
    words = sum(len(c.split()) for c in captions) / len(captions)
    print(machine_line())
    print(f"{args.repo}: {best:.2f} CPU ms per photo (batch {args.batch}, beam {args.beam}, "
          f"{len(files)} photos), {words:.1f} words a caption, captions {digest}")
    print_figures({"repo": str(args.repo), "cpu_ms_per_photo": round(best, 2),
                   "batch": args.batch, "beam": args.beam, "photos": len(files),
                   "words": round(words, 2), "captions": digest,
                   "machine": describe_machine()}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
