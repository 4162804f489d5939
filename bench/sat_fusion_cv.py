"""Does fusing the `sat` caption's text vector into the served vector help retrieval?

2-fold cross-validation on flickr8k-dev (the cv2/pool250 protocol of bench/quality_cv.py):
for each fold a `sat` captioner is trained on the other 250 photos + coco-mini-train (the
recipe of `capsearch build-models --only sat`, 2 language-model epochs, 12 caption epochs, the
last one kept: no held-out photo chooses an epoch), it captions the held-out 250, and their
MiniLM vectors are fused with the default representation in several ways. coco-mini-val
(pool 159) is scored with the shipped `sat.pt`, which never saw it.

    python bench/sat_fusion_cv.py [--work DIR]   # ~25 min on 2 cores, most of it training

The fold checkpoints are kept in --work (default ~/.cache/capsearch/sat-fusion-cv) and reused
when present.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_cv import subset  # noqa: E402

from capsearch.commands.train import write_subset  # noqa: E402
from services.caption.captioners.backbone import EfficientNetBackbone  # noqa: E402
from services.caption.captioners.sat import SatCaptioner  # noqa: E402
from services.caption.training.datasets import load_folder  # noqa: E402
from services.caption.training.features import cached_features  # noqa: E402
from services.caption.training.retrieval_metrics import caption_ranks, summarise  # noqa: E402
from services.caption.training.text_vectors import cached_text_vectors  # noqa: E402
from services.caption.training.train_projection import (  # noqa: E402
    ProjectionTrainOptions,
    concat_photos,
    photos_for_training,
    train_projection,
)
from services.encoder.encoder import build_text_encoder  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.devices import set_torch_threads  # noqa: E402
from shared.images import decode_rgb  # noqa: E402
from shared.vectors import l2_normalize  # noqa: E402


def train_sat(train_dir: Path, datasets: Path, out: Path) -> Path:
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "capsearch", "train-captioner",
                        "--data", str(train_dir), str(datasets / "coco-mini-train"),
                        "--text-only", str(datasets / "flickr8k-text-only-captions.tsv"),
                        "--out", str(out), "--epochs", "12", "--pretrain-epochs", "2",
                        "--image-size", "224", "--batch-size", "64", "--lr", "4e-4",
                        "--beam", "3", "--seed", "0"], check=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    settings = get_settings()
    work = args.work or settings.cache_dir / "sat-fusion-cv"
    set_torch_threads(settings.torch_threads or 2)
    torch.manual_seed(0)
    root = settings.datasets_dir
    backbone = EfficientNetBackbone(device="cpu", image_size=settings.backbone_image_size)
    encoder = build_text_encoder(settings.model_copy(update={"device": "cpu"}), precision="fp32")
    sets = {}
    for name in ("flickr8k-dev", "coco-mini-train", "coco-mini-val"):
        data = load_folder(root / name)
        feats = cached_features(data.paths, settings.cache_dir, backbone, map_views=0)
        sets[name] = (data, photos_for_training(data, feats, encoder, settings.cache_dir,
                                                settings.embedding_model))
    fdata, flickr = sets["flickr8k-dev"]
    extra = sets["coco-mini-train"][1]
    vdata, val = sets["coco-mini-val"]
    n = flickr.n_photos
    order = np.random.default_rng(0).permutation(n)  # quality_cv's cv2 folds
    options = ProjectionTrainOptions()

    def sat_vectors(checkpoint: Path | None, paths: list[Path]) -> np.ndarray:
        captioner = SatCaptioner(checkpoint, device="cpu", image_size=backbone.image_size)
        captions: list[str] = []
        for start in range(0, len(paths), 32):
            captions += captioner.caption([decode_rgb(p.read_bytes())
                                           for p in paths[start:start + 32]])
        return cached_text_vectors(captions, encoder, settings.cache_dir,
                                   model=settings.embedding_model, desc="sat caption vectors")

    def variants(head, photos, sat):  # type: ignore[no-untyped-def]
        image = head.project(photos.inputs[0])
        base = head.fuse(photos.tag_vectors, image)
        out = {"default (tags + image)": base, "sat caption alone": l2_normalize(sat)}
        for a in (0.5, 0.0):
            text = l2_normalize(a * l2_normalize(photos.tag_vectors) + (1 - a) * l2_normalize(sat))
            out[f"text = {a:g}·tags + {1 - a:g}·sat"] = head.fuse(text, image)
        for w in (0.15, 0.25, 0.5):
            out[f"default + {w:g}·sat"] = l2_normalize(base + w * l2_normalize(sat))
        return out

    ranks: dict[str, list[np.ndarray]] = {}
    for name, held in (("a", np.sort(order[:n // 2])), ("b", np.sort(order[n // 2:]))):
        kept = np.setdiff1d(np.arange(n), held)
        train_dir = write_subset(root / "flickr8k-dev", {fdata.paths[i].name for i in kept},
                                 work / f"{name}-train")
        checkpoint = train_sat(train_dir, root, work / f"sat-{name}.pt")
        head = train_projection(concat_photos([subset(flickr, kept), extra]),
                                image_size=backbone.image_size, options=options)
        part = subset(flickr, held)
        sat = sat_vectors(checkpoint, [fdata.paths[i] for i in held])
        for label, vectors in variants(head, part, sat).items():
            ranks.setdefault(label, []).append(
                caption_ranks(vectors, part.caption_vectors, part.caption_owner))
    head_all = train_projection(concat_photos([flickr, extra]), image_size=backbone.image_size,
                                options=options)
    coco = variants(head_all, val, sat_vectors(None, list(vdata.paths)))
    print(f"{'served vector':26s} {'cv2/pool250 R@1 / R@5 / R@10':>30s}   coco/pool159 R@1 / R@10")
    for label, parts in ranks.items():
        cv = summarise(np.concatenate(parts))
        co = summarise(caption_ranks(coco[label], val.caption_vectors, val.caption_owner))
        print(f"{label:26s} {cv['r1']:10.1f} / {cv['r5']:4.1f} / {cv['r10']:4.1f}"
              f"   {co['r1']:10.1f} / {co['r10']:4.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
