"""Retrieval quality of each representation, never scoring a photo a model was trained on.

    python bench/quality_cv.py                # the table of docs/quality.md
    python bench/quality_cv.py --json         # the last line is one JSON object

Every model here is the production one (`train_projection` on the worker's cached CNN
features, vectors made by the same `ProjectionHead` methods the worker calls); the tag
captions are the `tags` captioner's. Protocols (photos of flickr8k-dev unless said):

- cv5/pool100: 5 folds; train on 400 photos + coco-mini-train, score the 100 held out.
- cv2/pool250: 2 folds; train on 250 + coco-mini-train, score the 250 held out.
- est/pool500: the cv5 ranks extrapolated to a 500-photo pool (beta-binomial, Jeffreys
  prior); a conservative floor for trained heads (see `extrapolate`).
- oof/pool500: all 500 photos, each embedded by the cv5 model that did not train on it: a
  real 500 pool of held-out vectors, but from 5 models whose small differences in offset act
  as extra distractors, so also low.
- coco/pool159: train on all of flickr8k-dev + coco-mini-train, score coco-mini-val.

Heads always train on fp32 CNN features (as `capsearch build-models` does); `--serve-precision
int8` scores the held-out photos on features from the static int8 ONNX export of the CNN
(`CAPSEARCH_BACKBONE_PRECISION=int8`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from services.caption.captioners.backbone import EfficientNetBackbone
from services.caption.projection import ProjectionHead
from services.caption.training.datasets import CaptionedImages, load_folder
from services.caption.training.features import cached_features
from services.caption.training.retrieval_metrics import caption_ranks, extrapolate, summarise
from services.caption.training.train_projection import (
    ProjectionTrainOptions,
    TrainingPhotos,
    concat_photos,
    photos_for_training,
    train_projection,
)
from services.encoder.encoder import build_text_encoder
from shared.config import get_settings
from shared.devices import set_torch_threads

Vectors = Callable[[ProjectionHead | None, TrainingPhotos], np.ndarray]


def subset(p: TrainingPhotos, rows: np.ndarray) -> TrainingPhotos:
    keep = np.isin(p.caption_owner, rows)
    return TrainingPhotos(p.inputs[:, rows], p.tag_vectors[rows], p.caption_vectors[keep],
                          np.searchsorted(rows, p.caption_owner[keep]))


def representations(options: ProjectionTrainOptions) -> dict[str, tuple[bool, Vectors]]:
    """name → (needs a trained head, vectors of photos)."""
    def image(head: ProjectionHead | None, p: TrainingPhotos) -> np.ndarray:
        assert head is not None
        return head.project(p.inputs[0])

    def fused(head: ProjectionHead | None, p: TrainingPhotos) -> np.ndarray:
        assert head is not None
        return head.fuse(p.tag_vectors, head.project(p.inputs[0]))

    def fused_plain(head: ProjectionHead | None, p: TrainingPhotos) -> np.ndarray:
        assert head is not None
        bare = ProjectionHead(head.weight, head.bias, head.image_size, head.text_weight)
        return bare.fuse(p.tag_vectors, bare.project(p.inputs[0]))

    return {"tags caption": (False, lambda head, p: p.tag_vectors),
            "image (ridge head)": (True, image),
            "tags + image, no metric/hubness": (True, fused_plain),
            "fused (default)": (True, fused)}


def run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    settings = get_settings()
    set_torch_threads(settings.torch_threads or 2)
    root = args.datasets or settings.datasets_dir
    backbone = EfficientNetBackbone(device="cpu", image_size=settings.backbone_image_size)
    served_by = (backbone if args.serve_precision == "fp32" else
                 EfficientNetBackbone(device="cpu", image_size=settings.backbone_image_size,
                                      precision=args.serve_precision))
    encoder = build_text_encoder(settings.model_copy(update={"device": "cpu"}),
                                 precision="fp32")

    def photos(data: CaptionedImages, cnn: EfficientNetBackbone) -> TrainingPhotos:
        feats = cached_features(data.paths, settings.cache_dir, cnn, map_views=0,
                                desc=f"CNN features of {data.name} ({cnn.precision})")
        return photos_for_training(data, feats, encoder, settings.cache_dir,
                                   settings.embedding_model)

    sets, served = {}, {}
    for name in ("flickr8k-dev", "coco-mini-train", "coco-mini-val"):
        data = load_folder(root / name)
        sets[name] = photos(data, backbone)
        served[name] = sets[name] if served_by is backbone else photos(data, served_by)
    flickr, extra = sets["flickr8k-dev"], sets["coco-mini-train"]
    scored, val = served["flickr8k-dev"], served["coco-mini-val"]
    options = ProjectionTrainOptions()
    reps = representations(options)
    n = flickr.n_photos
    order = np.random.default_rng(args.seed).permutation(n)

    def train(rows: np.ndarray) -> ProjectionHead:
        return train_projection(concat_photos([subset(flickr, rows), extra]),
                                image_size=backbone.image_size, options=options)

    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in reps}
    cv5 = [np.sort(order[k::5]) for k in range(5)]
    heads5 = [train(np.setdiff1d(np.arange(n), held)) for held in cv5]
    cv2 = [np.sort(order[:n // 2]), np.sort(order[n // 2:])]
    heads2 = [train(np.setdiff1d(np.arange(n), held)) for held in cv2]
    head_all = train(np.arange(n))
    for name, (_, vectors) in reps.items():
        ranks5, oof = [], np.zeros((n, flickr.caption_vectors.shape[1]), np.float32)
        for held, head in zip(cv5, heads5, strict=True):
            part = subset(scored, held)
            v = vectors(head, part)
            oof[held] = v
            ranks5.append(caption_ranks(v, part.caption_vectors, part.caption_owner))
        r5 = np.concatenate(ranks5)
        ranks2 = []
        for held, head in zip(cv2, heads2, strict=True):
            part = subset(scored, held)
            ranks2.append(caption_ranks(vectors(head, part), part.caption_vectors,
                                        part.caption_owner))
        results[name] = {
            "cv5/pool100": summarise(r5),
            "cv2/pool250": summarise(np.concatenate(ranks2)),
            "est/pool500": extrapolate(r5, 100, 500),
            "oof/pool500": summarise(caption_ranks(oof, flickr.caption_vectors,
                                                   flickr.caption_owner)),
            "coco/pool159": summarise(caption_ranks(vectors(head_all, val),
                                                    val.caption_vectors, val.caption_owner)),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=None,
                        help="the shared data folder (default CAPSEARCH_DATASETS_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment")
    parser.add_argument("--serve-precision", choices=("fp32", "int8"), default="fp32",
                        help="the CNN precision of the scored photos' features")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = run(args)
    protocols = list(next(iter(results.values())))
    print(f"{'representation':34s} " + " ".join(f"{p:>22s}" for p in protocols))
    print(f"{'':34s} " + " ".join(f"{'R@1  R@5 R@10  med':>22s}" for _ in protocols))
    for name, by_protocol in results.items():
        cells = [f"{m['r1']:5.1f}{m['r5']:5.1f}{m['r10']:6.1f}{m['median_rank']:5.0f}"
                 for m in by_protocol.values()]
        print(f"{name:34s} " + " ".join(f"{c:>22s}" for c in cells))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
