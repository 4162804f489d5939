"""The text encoder (MiniLM-L6) on a CPU: CPU time per text by batch size, runtime and precision.

Encodes real human captions (flickr8k-dev under CAPSEARCH_DATASETS_DIR) in batches of the
sizes given, on one thread (the encoder service runs one inference thread), three ways:

- `torch fp32`: the transformers model, eager (`CAPSEARCH_ENCODER_RUNTIME=torch`);
- `onnx fp32`: ONNX Runtime over the export fused by ORT's transformer optimizer;
- `onnx int8`: the same, dynamically quantised (per-channel 7-bit weights).

Reports CPU ms per text (process time; the ways interleaved batch by batch, best of three
passes: other load on the machine can only add to it) and how far each way's vectors are from
torch fp32's (min and mean cosine over every caption used).

    python bench/encoder_bench.py [--texts 240] [--batches 1,3,8,64] [--json]

With --json the LAST line is one JSON object: {way: {batch: ms_per_text}, "agreement": {way:
{"min": .., "mean": ..}}, "machine": {cpu, flags, cores, load}}.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe_machine, machine_line, print_figures  # noqa: E402

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


def ms_per_text(ways: dict[str, Encode], texts: list[str], batch: int, rounds: int = 3
                ) -> dict[str, float]:
    """CPU ms per text of each way, interleaved batch by batch (so that a shared VM's drifts
    hit every way alike), best of `rounds` passes (interference only adds)."""
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    for encode in ways.values():  # warm-up
        for b in batches[:2]:
            encode(b)
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        spent = dict.fromkeys(ways, 0.0)
        for b in batches:
            for name, encode in ways.items():
                start = time.process_time()
                encode(b)
                spent[name] += time.process_time() - start
        best = {name: min(best[name], spent[name]) for name in ways}
    return {name: 1000 * seconds / len(texts) for name, seconds in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=240, help="captions encoded per timing")
    parser.add_argument("--batches", default="1,3,8,64", help="batch sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args()
    set_torch_threads(1)
    print(machine_line(), flush=True)
    settings = get_settings()
    texts = captions(settings.datasets_dir, args.texts)
    batches = [int(b) for b in args.batches.split(",")]

    encoders = {f"{runtime} {precision}": BertTextEncoder(
        settings.encoder_model_dir, device="cpu", runtime=runtime, precision=precision)
        for runtime, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))}
    for encoder in encoders.values():
        encoder.load()
    ways: dict[str, Encode] = {name: e._encode for name, e in encoders.items()}
    fp32 = encoders["torch fp32"]
    reference = np.concatenate([fp32._encode(texts[i:i + 8]) for i in range(0, len(texts), 8)])

    by_batch = {b: ms_per_text(ways, texts, b) for b in batches}
    result = {name: {str(b): round(by_batch[b][name], 3) for b in batches} for name in ways}
    agreement: dict[str, dict[str, float]] = {}
    for name, encode in ways.items():
        vectors = np.concatenate([encode(texts[i:i + 8]) for i in range(0, len(texts), 8)])
        cos = (vectors * reference).sum(axis=1)
        agreement[name] = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
        cells = "  ".join(f"b{b}: {result[name][str(b)]:6.2f}" for b in batches)
        print(f"{name:14s} CPU ms/text  {cells}   cosine to fp32 min {agreement[name]['min']:.6f}"
              f" mean {agreement[name]['mean']:.6f}", flush=True)
    print_figures({**result, "agreement": agreement, "machine": describe_machine()}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
