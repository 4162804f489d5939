"""The text encoder (MiniLM-L6) on a CPU: CPU time per text by batch size and precision.

Encodes real human captions (flickr8k-dev under CAPSEARCH_DATASETS_DIR) in batches of the
sizes given, on one thread (the encoder service runs one inference thread), three ways:

- `fp32`: the model as loaded;
- `bf16 autocast`: the fp32 model under `torch.autocast(bfloat16)` (how the service ran bf16
  until 2026-11-29: autocast casts every weight again on every forward);
- `bf16`: `BertTextEncoder(precision="bf16")`, the default on a CPU with AVX512-BF16 or AMX:
  bf16 copies of the `Linear` weights made once at load.

Reports CPU ms per text (process time, so other load on the machine barely moves it) and how
far each way's vectors are from fp32's (min and mean cosine over every caption used).

    python bench/encoder_bench.py [--texts 240] [--batches 1,3,8,64] [--json]

With --json the LAST line is one JSON object: {way: {batch: ms_per_text}, "agreement": {way:
{"min": .., "mean": ..}}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsearch.files import read_captions  # noqa: E402
from services.encoder.encoder import BertTextEncoder  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.devices import set_torch_threads  # noqa: E402

Encode = Callable[[list[str]], np.ndarray]


def captions(datasets: Path, n: int) -> list[str]:
    tsv = datasets / "flickr8k-dev" / "captions.tsv"
    if not tsv.is_file():
        raise SystemExit(f"no {tsv} (set CAPSEARCH_DATASETS_DIR)")
    texts = [c for cs in read_captions(tsv).values() for c in cs]
    return texts[:n]


def autocast_of(encoder: BertTextEncoder) -> Encode:
    """The fp32 encoder's batches run under bf16 autocast."""
    def encode(batch: list[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder._encode(batch)
    return encode


def ms_per_text(encode: Encode, texts: list[str], batch: int) -> float:
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    for b in batches[:2]:  # warm-up
        encode(b)
    start = time.process_time()
    for b in batches:
        encode(b)
    return 1000 * (time.process_time() - start) / len(texts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=240, help="captions encoded per timing")
    parser.add_argument("--batches", default="1,3,8,64", help="batch sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args()
    set_torch_threads(1)
    settings = get_settings()
    texts = captions(settings.datasets_dir, args.texts)
    batches = [int(b) for b in args.batches.split(",")]

    fp32 = BertTextEncoder(settings.encoder_model_dir, device="cpu", precision="fp32")
    bf16 = BertTextEncoder(settings.encoder_model_dir, device="cpu", precision="bf16")
    fp32.load()
    bf16.load()
    ways: dict[str, Encode] = {"fp32": fp32._encode, "bf16 autocast": autocast_of(fp32),
                               "bf16": bf16._encode}
    reference = np.concatenate([fp32._encode(texts[i:i + 8]) for i in range(0, len(texts), 8)])

    result: dict[str, dict[str, float]] = {}
    agreement: dict[str, dict[str, float]] = {}
    for name, encode in ways.items():
        result[name] = {str(b): round(ms_per_text(encode, texts, b), 3) for b in batches}
        vectors = np.concatenate([encode(texts[i:i + 8]) for i in range(0, len(texts), 8)])
        cos = (vectors * reference).sum(axis=1)
        agreement[name] = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
        cells = "  ".join(f"b{b}: {result[name][str(b)]:6.2f}" for b in batches)
        print(f"{name:14s} CPU ms/text  {cells}   cosine to fp32 min {agreement[name]['min']:.6f}"
              f" mean {agreement[name]['mean']:.6f}", flush=True)
    if args.json:
        print(json.dumps({**result, "agreement": agreement}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
