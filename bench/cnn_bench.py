"""The caption worker's CNN pass on a CPU: how the batch is run decides its speed.

Times EfficientNet-Lite0 (the shared backbone of every captioner) over already preprocessed
random batches, three ways:

- `one pass, T threads`: the whole micro-batch in one forward, torch using every core (the way
  the worker ran before; large batches spill the activations out of the caches);
- `streams, eager`: chunks of 4 images, each pass single-threaded, one stream per core;
- `streams, frozen`: the same through the frozen TorchScript copy (batch norms folded), the
  worker's default on a CPU without native bf16;
- `streams, frozen, bf16`: the same with bf16 weights and activations, the default
  (`CAPSEARCH_BACKBONE_PRECISION=auto`) on a CPU with AVX512-BF16 or AMX (measured on any CPU:
  without native bf16 it is emulated and slow).

    python bench/cnn_bench.py [--size 256] [--batch 16] [--images 256] [--json]

Then, on real photos (`--photos DIR`, default the first 96 of coco-mini-val under
CAPSEARCH_DATASETS_DIR, skipped when absent), how far the bf16 pass moves the pooled features
the projection head reads from the fp32 pass: min and mean cosine.

With --json the LAST line is one JSON object of images/s per way (and the agreement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.caption.captioners.backbone import EfficientNetBackbone  # noqa: E402
from services.caption.projection import GEM_P, head_input  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.devices import cpu_has_native_bf16, cpu_streams  # noqa: E402
from shared.images import decode_rgb  # noqa: E402


def images_per_s(backbone: EfficientNetBackbone, batch: int, images: int, size: int) -> float:
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # warm-up (the frozen copy's executor optimises on its second run)
        backbone.forward_tensor(x)
    rounds = max(1, images // batch)
    start = time.perf_counter()
    for _ in range(rounds):
        backbone.forward_tensor(x)
    return rounds * batch / (time.perf_counter() - start)


def bf16_agreement(photos: list[Path], size: int) -> dict[str, float]:
    """Min and mean cosine between the fp32 and bf16 passes' pooled features (the projection
    head's input: GeM of the feature map + the pooled bottleneck)."""
    images = [decode_rgb(p.read_bytes()) for p in photos]
    outs = []
    for precision in ("fp32", "bf16"):
        backbone = EfficientNetBackbone(device="cpu", image_size=size, precision=precision)
        outs.append(head_input(backbone.forward(images), GEM_P))
        backbone.close()
    cos = torch.nn.functional.cosine_similarity(*outs)
    return {"photos": len(images), "min_cosine": round(float(cos.min()), 4),
            "mean_cosine": round(float(cos.mean()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="input size in px (the default 256)")
    p.add_argument("--batch", type=int, default=16, help="images per micro-batch")
    p.add_argument("--images", type=int, default=256, help="images timed per way")
    p.add_argument("--photos", type=Path, default=None,
                   help="folder of photos for the fp32/bf16 agreement (default coco-mini-val)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cores = cpu_streams()
    results = {}
    ways = [
        (f"one pass, {cores} threads", dict(streams=1, jit=False), cores),
        ("streams, eager", dict(streams=cores, jit=False), 1),
        ("streams, frozen", dict(streams=cores, jit=True), 1),
        ("streams, frozen, bf16", dict(streams=cores, jit=True, precision="bf16"), 1),
    ]
    print(f"# EfficientNet-Lite0 at {args.size} px, micro-batches of {args.batch}, "
          f"{cores} cores, native bf16: {cpu_has_native_bf16()}", flush=True)
    for name, kwargs, threads in ways:
        backbone = EfficientNetBackbone(device="cpu", image_size=args.size, **kwargs)
        backbone.load()
        torch.set_num_threads(threads)  # after load(): streams set one thread per pass
        results[name] = round(images_per_s(backbone, args.batch, args.images, args.size), 1)
        backbone.close()
        print(f"{name:24s} {results[name]:7.1f} images/s", flush=True)
    folder = args.photos or get_settings().datasets_dir / "coco-mini-val" / "images"
    photos = sorted(folder.glob("*.jp*g"))[:96] if folder.is_dir() else []
    agreement = bf16_agreement(photos, args.size) if photos else None
    if agreement:
        print(f"bf16 vs fp32 pooled features on {agreement['photos']} photos of {folder}: "
              f"cosine min {agreement['min_cosine']}, mean {agreement['mean_cosine']}")
    if args.json:
        print(json.dumps({"size": args.size, "batch": args.batch, "cores": cores,
                          "native_bf16": cpu_has_native_bf16(), "img_per_s": results,
                          "bf16_agreement": agreement}))


if __name__ == "__main__":
    main()
