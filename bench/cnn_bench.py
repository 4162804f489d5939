"""The caption worker's CNN pass on a CPU: which runtime and threading to serve it with.

Times the backbone (EfficientNet-Lite, the shared pass of every captioner) over already
preprocessed random micro-batches, several ways, **interleaved batch by batch** (so the drifts
of a shared machine hit every way alike), in CPU seconds of this process and in wall seconds:

- `torch streams`: eager torch, chunks of 4 images, each pass single-threaded, one stream per
  core (the worker's CPU path before ONNX Runtime, less its TorchScript copy);
- `onnx one pass, T threads`: ONNX Runtime, the whole micro-batch in one run, T intra-op threads;
- `onnx streams`: ONNX Runtime, chunks of 4, one thread each, one stream per core (the default);
- `onnx int8 streams`: the same on the static int8 export (calibrated on flickr8k-train).

    python bench/cnn_bench.py [--model lite0] [--size 256] [--batch 32] [--images 256] [--json]

Then, on real photos (`--photos DIR`, default the first 96 of coco-mini-val under
CAPSEARCH_DATASETS_DIR, skipped when absent), how far each way moves the pooled features the
projection head reads from torch fp32's: min and mean cosine.

With --json the LAST line is one JSON object: images/s (wall) and images per CPU-second per
way, the agreement, and the machine (CPU model, flags, load).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe_machine, machine_line, print_figures  # noqa: E402

from services.caption.captioners.backbone import EfficientNetBackbone  # noqa: E402
from services.caption.projection import GEM_P, head_input  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.devices import cpu_streams  # noqa: E402
from shared.images import decode_rgb  # noqa: E402


def ways(cores: int, model: str, size: int) -> dict[str, EfficientNetBackbone]:
    common = {"model": model, "device": "cpu", "image_size": size}
    one_pass = EfficientNetBackbone(**common, streams=1)
    out = {
        "torch streams": EfficientNetBackbone(**common, streams=cores, runtime="torch"),
        f"onnx one pass, {cores} threads": one_pass,
        "onnx streams": EfficientNetBackbone(**common, streams=cores),
        "onnx int8 streams": EfficientNetBackbone(**common, streams=cores, precision="int8"),
    }
    for backbone in out.values():
        backbone.load()
    one_pass._net = _session_with_threads(one_pass, cores)
    return out


def _session_with_threads(backbone: EfficientNetBackbone, threads: int) -> object:
    from services.caption.captioners.backbone_export import export_backbone
    from shared.onnxrt import make_session

    path = export_backbone(backbone.module, name=backbone.name, image_size=backbone.image_size,
                           precision="fp32", cache_dir=backbone.cache_dir)
    return make_session(path, threads)


def timed(backbones: dict[str, EfficientNetBackbone], batch: int, images: int, size: int,
          rounds: int = 3) -> dict[str, dict[str, float]]:
    """images/s (wall) and images per CPU-second of each way, interleaved batch by batch,
    best of `rounds` passes (interference only adds)."""
    x = torch.randn(batch, 3, size, size)
    for backbone in backbones.values():  # warm-up
        backbone.forward_tensor(x)
    n = max(1, images // batch)
    best = {name: (float("inf"), float("inf")) for name in backbones}
    for _ in range(rounds):
        spent = {name: [0.0, 0.0] for name in backbones}
        for _ in range(n):
            for name, backbone in backbones.items():
                wall, cpu = time.perf_counter(), time.process_time()
                backbone.forward_tensor(x)
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.process_time() - cpu
        best = {k: (min(best[k][0], spent[k][0]), min(best[k][1], spent[k][1])) for k in best}
    return {k: {"img_per_s": round(n * batch / w, 1), "img_per_cpu_s": round(n * batch / c, 1)}
            for k, (w, c) in best.items()}


def agreement(backbones: dict[str, EfficientNetBackbone], photos: list[Path], model: str,
              size: int) -> dict[str, dict[str, float]]:
    """Min and mean cosine of each way's pooled features (the projection head's input) to
    torch fp32's, on real photos."""
    images = [decode_rgb(p.read_bytes()) for p in photos]
    ref = head_input(EfficientNetBackbone(model=model, device="cpu", image_size=size,
                                          runtime="torch").forward(images), GEM_P)
    out = {}
    for name, backbone in backbones.items():
        cos = torch.nn.functional.cosine_similarity(ref, head_input(backbone.forward(images),
                                                                    GEM_P))
        out[name] = {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite0", help="lite0 | lite1 | lite2")
    p.add_argument("--size", type=int, default=256, help="input size in px (the default 256)")
    p.add_argument("--batch", type=int, default=32, help="images per micro-batch")
    p.add_argument("--images", type=int, default=256, help="images timed per way and pass")
    p.add_argument("--photos", type=Path, default=None,
                   help="folder of photos for the agreement (default coco-mini-val)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cores = cpu_streams()
    print(machine_line(), flush=True)
    print(f"# {args.model} at {args.size} px, micro-batches of {args.batch}, {cores} cores",
          flush=True)
    backbones = ways(cores, args.model, args.size)
    speeds = timed(backbones, args.batch, args.images, args.size)
    for name, figures in speeds.items():
        print(f"{name:26s} {figures['img_per_s']:7.1f} images/s  "
              f"{figures['img_per_cpu_s']:7.1f} images per CPU-second", flush=True)
    folder = args.photos or get_settings().datasets_dir / "coco-mini-val" / "images"
    photos = sorted(folder.glob("*.jp*g"))[:96] if folder.is_dir() else []
    agree = agreement(backbones, photos, args.model, args.size) if photos else None
    for name, cos in (agree or {}).items():
        print(f"{name:26s} pooled features vs torch fp32 on {len(photos)} photos: cosine min "
              f"{cos['min']}, mean {cos['mean']}")
    print_figures({"model": args.model, "size": args.size, "batch": args.batch,
                   "cores": cores, "ways": speeds, "agreement": agree,
                   "machine": describe_machine()}, args.json)


if __name__ == "__main__":
    main()
