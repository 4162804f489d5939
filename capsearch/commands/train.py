"""`capsearch train-captioner`, `train-projection` and `build-models`: the trained models.

Training data: folders in the shared format (`--data DIR`: images/ + captions.tsv) and
COCO-format captions (`--coco ANNOTATIONS.json IMAGES_DIR`). CNN features are computed once
and cached under `--cache-dir` (default CAPSEARCH_CACHE_DIR), so later runs start at once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from services.caption.captioners.backbone import EfficientNetBackbone, backbone_options
from services.caption.training.datasets import (
    CaptionedImages,
    concat,
    load_coco,
    load_folder,
    load_text_only,
)
from services.caption.training.features import (
    FeatureSet,
    cache_file,
    cached_features,
    read_maps,
)
from shared.config import Settings, get_settings
from shared.devices import set_torch_threads
from shared.logging import configure_logging

log = logging.getLogger(__name__)


def add_data_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--data", nargs="+", type=Path, default=[], metavar="DIR",
                   help="folders in the shared format (images/ + captions.tsv)")
    p.add_argument("--coco", nargs=2, action="append", type=Path, default=[],
                   metavar=("ANNOTATIONS", "IMAGES"),
                   help="COCO-format captions JSON and its image folder (repeatable)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where CNN features and text vectors are cached (CAPSEARCH_CACHE_DIR)")
    p.add_argument("--image-size", type=int, default=None,
                   help="CNN input size in px (default CAPSEARCH_BACKBONE_IMAGE_SIZE)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default CAPSEARCH_DEVICE)")
    p.add_argument("--seed", type=int, default=0)


def training_sets(args: argparse.Namespace) -> list[CaptionedImages]:
    sets = [load_folder(folder) for folder in args.data]
    sets += [load_coco(annotations, images) for annotations, images in args.coco]
    if not sets:
        raise ValueError("no training data: give --data DIR and/or --coco ANNOTATIONS IMAGES")
    return sets


def backbone_for(args: argparse.Namespace, settings: Settings) -> EfficientNetBackbone:
    options = backbone_options(settings) | {"precision": "fp32"}  # heads learn fp32 features
    options["device"] = args.device or settings.device
    options["image_size"] = args.image_size or settings.backbone_image_size
    return EfficientNetBackbone(**options)


def features_of(sets: list[CaptionedImages], backbone: EfficientNetBackbone, cache_dir: Path,
                map_views: int) -> list[FeatureSet]:
    return [cached_features(s.paths, cache_dir, backbone, map_views=map_views,
                            desc=f"CNN features of {s.name}") for s in sets]


def _setup(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    configure_logging("WARNING", json_logs=False)
    set_torch_threads(settings.torch_threads)
    torch.manual_seed(args.seed)
    return settings


# ---- train-captioner -------------------------------------------------------------------------


def run_train_captioner(args: argparse.Namespace) -> int:
    settings = _setup(args)
    cache_dir = args.cache_dir or settings.cache_dir
    sets = training_sets(args)
    train = concat(sets)
    backbone = backbone_for(args, settings)
    features_of(sets, backbone, cache_dir, map_views=0)  # extracted once, cached on disk
    if sum(len(s.paths) for s in sets) == len(train):  # the sets' maps, read into one array
        maps = read_maps([cache_file(s.paths, cache_dir, backbone) for s in sets], 2)
    else:  # a photo in two sets: keep the first, as concat does
        maps = _dedupe_maps(sets, features_of(sets, backbone, cache_dir, map_views=2))
    val = None
    if args.val:
        from services.caption.training.train_sat import ValidationSet

        held = load_folder(args.val)
        vf = cached_features(held.paths, cache_dir, backbone, map_views=1,
                             desc=f"CNN features of {held.name}")
        assert vf.maps is not None
        val = ValidationSet(torch.from_numpy(vf.maps[0].astype(np.float32)), held.captions)
    meta = {"trained_on": [s.name for s in sets], "photos": len(train),
            "image_size": backbone.image_size, "backbone": backbone.name}
    if args.arch == "transformer":
        checkpoint = _train_transformer(args, train, maps, val, meta)
    else:
        checkpoint = _train_sat(args, settings, train, maps, backbone, val, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {args.arch} decoder, "
          f"vocabulary {len(checkpoint.vocab)} words, trained on {len(train)} photos")
    scored = [h["bleu4"] for h in checkpoint.meta.get("history", []) if "bleu4" in h]
    if scored:
        print(f"BLEU-4 on {args.val} of the kept epoch: {max(scored):.2f}")
    return 0


def _train_transformer(args: argparse.Namespace, train: CaptionedImages, maps: np.ndarray,
                       val: object, meta: dict[str, object]) -> object:
    from services.caption.training.train_transformer import (
        TransformerTrainOptions,
        train_transformer,
    )

    options = TransformerTrainOptions(epochs=args.epochs, lr=args.lr, beam_width=args.beam,
                                      seed=args.seed,
                                      model={"width": args.hidden} if args.hidden else {})
    return train_transformer(train.captions, maps, args.out, options=options,
                             val=val, meta=meta)  # type: ignore[arg-type]


def _train_sat(args: argparse.Namespace, settings: Settings, train: CaptionedImages,
               maps: np.ndarray, backbone: EfficientNetBackbone, val: object,
               meta: dict[str, object]) -> object:
    from services.caption.training.regions import CachedRegions, LiveRegions
    from services.caption.training.train_sat import (
        SatTrainOptions,
        train_sat,
        with_model_overrides,
    )

    text_only = ([c for group in load_text_only(args.text_only) for c in group]
                 if args.text_only else [])
    options = SatTrainOptions(epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                              batch_size=args.batch_size, lr=args.lr, beam_width=args.beam,
                              seed=args.seed, device=args.device or settings.device,
                              amp=not args.no_amp)
    if args.hidden:
        options = with_model_overrides(options, hidden_dim=args.hidden)
    cached = CachedRegions(maps, backbone.device)
    regions, extra_params, extra_state = cached, [], None
    if args.fine_tune:
        live = LiveRegions(train.paths, backbone)
        regions, extra_params, extra_state = live, live.parameters(), live.state
    return train_sat(train.captions, regions, cached.n_views, cached.mean(), args.out,
                     options=options, text_only=text_only, val=val,  # type: ignore[arg-type]
                     resume=args.resume, extra_params=extra_params, extra_state=extra_state,
                     meta=dict(meta, text_only=str(args.text_only or "")))


def _dedupe_maps(sets: list[CaptionedImages], feats: list[FeatureSet]) -> np.ndarray:
    seen: dict[Path, np.ndarray] = {}
    for s, f in zip(sets, feats, strict=True):
        assert f.maps is not None
        for i, path in enumerate(s.paths):
            seen.setdefault(path.resolve(), f.maps[:, i])
    return np.stack(list(seen.values()), axis=1)


def add_train_captioner(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train-captioner",
                       help="train a caption decoder (transformer: the default captioner; sat)")
    add_data_arguments(p)
    p.add_argument("--arch", choices=["transformer", "sat"], default="transformer",
                   help="the decoder: transformer (captioner.pt) or Show, Attend and Tell")
    p.add_argument("--text-only", type=Path, default=None, metavar="TSV",
                   help="sat: captions without photos, vocabulary + language-model pre-training")
    p.add_argument("--out", type=Path, required=True, help="the checkpoint file to write")
    p.add_argument("--val", type=Path, default=None, metavar="DIR",
                   help="a held-out folder: BLEU each epoch, the best epoch is kept")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=1,
                   help="sat: language-model epochs over --text-only first (0 = none)")
    p.add_argument("--batch-size", type=int, default=64, help="sat: captions per batch")
    p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate")
    p.add_argument("--hidden", type=int, default=None,
                   help="decoder width (transformer 256, sat's LSTM 384)")
    p.add_argument("--beam", type=int, default=3, help="beam width for --val")
    p.add_argument("--fine-tune", action="store_true",
                   help="sat: train the CNN too (needs the photos each step: use a GPU)")
    p.add_argument("--no-amp", action="store_true", help="sat: no mixed precision on the GPU")
    p.add_argument("--resume", action="store_true",
                   help="sat: continue from OUT.resume (written after every epoch)")
    p.set_defaults(func=run_train_captioner)


# ---- train-projection ------------------------------------------------------------------------


def run_train_projection(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from services.caption.projection import save_head
    from services.caption.training.train_projection import (
        ProjectionTrainOptions,
        concat_photos,
        photos_for_training,
        train_projection,
    )
    from services.encoder.encoder import build_text_encoder

    settings = _setup(args)
    cache_dir = args.cache_dir or settings.cache_dir
    sets = training_sets(args)
    backbone = backbone_for(args, settings)
    feats = features_of(sets, backbone, cache_dir, map_views=0)
    # fp32 on every machine, as the CNN features: the head is the same wherever it is built
    encoder = build_text_encoder(settings, precision="fp32")
    photos = concat_photos([photos_for_training(s, f, encoder, cache_dir,
                                                settings.embedding_model)
                            for s, f in zip(sets, feats, strict=True)])
    val = None
    if args.val:
        held = load_folder(args.val)
        [vf] = features_of([held], backbone, cache_dir, map_views=0)
        val = photos_for_training(held, vf, encoder, cache_dir, settings.embedding_model)
    options = replace(ProjectionTrainOptions(), epochs=args.epochs, hidden=args.hidden,
                      seed=args.seed)
    if args.text_weight is not None:
        options = replace(options, text_weights=(args.text_weight,))
    if args.hub_beta is not None:
        options = replace(options, hub_betas=(args.hub_beta,))
    head = train_projection(photos, image_size=backbone.image_size, options=options, val=val,
                            meta={"trained_on": [s.name for s in sets],
                                  "text_model": settings.embedding_model,
                                  "backbone": backbone.name})
    save_head(args.out, head)
    names = ", ".join(s.name for s in sets)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): head trained on "
          f"{photos.n_photos} photos × {photos.inputs.shape[0]} views of {names}; "
          f"text weight {head.text_weight}, hub beta {head.hub_beta}")
    if val is not None:
        chosen = head.meta["validation"]
        print(f"on the {val.n_photos} held-out photos of {args.val}: {chosen['chosen']} "
              f"(epoch {chosen['kept_epoch']})")
    return 0


def add_train_projection(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from services.caption.training.train_projection import ProjectionTrainOptions

    defaults = ProjectionTrainOptions()
    p = sub.add_parser("train-projection",
                       help="train the head that maps photos into the text space")
    add_data_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="the head file to write")
    p.add_argument("--val", type=Path, default=None, metavar="DIR",
                   help="held-out photos (shared format): choose the epoch, the fusion weight "
                        "and the hubness correction on them")
    p.add_argument("--epochs", type=int, default=defaults.epochs,
                   help="training epochs (with --val: at most; the best is kept)")
    p.add_argument("--hidden", type=int, default=defaults.hidden, help="the MLP's hidden size")
    p.add_argument("--text-weight", type=float, default=None,
                   help="fix the tag caption's weight in the fused vector "
                        f"(default: chosen on --val among {defaults.text_weights})")
    p.add_argument("--hub-beta", type=float, default=None,
                   help="fix the strength of the hubness correction, 0 = none "
                        f"(default: chosen on --val among {defaults.hub_betas})")
    p.set_defaults(func=run_train_projection)


# ---- build-models ----------------------------------------------------------------------------

# the default models: what `capsearch build-models` trains (docs/quality.md says why);
# flickr8k-dev and coco-mini-val stay held out for evaluation
DEFAULT_TRAINING_SETS = ("flickr8k-train", "coco-mini-train")
HELD_OUT = 500  # flickr8k-train photos kept out of training: every choice is made on them
CAPTIONER_EPOCHS = 8


def split_folder(source: Path, out_dir: Path, held_out: int, seed: int = 0) -> tuple[Path, Path]:
    """Split a shared-format folder into `<name>-train` and `<name>-val` (symlinked images,
    their captions.tsv rows): the photos sorted by name, shuffled with `seed`, the last
    `held_out` kept out. Deterministic, so the held-out BLEU can be re-measured."""
    import csv
    import random

    with (source / "captions.tsv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    images = sorted({r[0] for r in rows[1:]})
    random.Random(seed).shuffle(images)
    return (write_subset(source, set(images[:-held_out]), out_dir / f"{source.name}-train"),
            write_subset(source, set(images[-held_out:]), out_dir / f"{source.name}-val"))


def write_subset(source: Path, keep: set[str], folder: Path) -> Path:
    """Some photos of a shared-format folder as a folder of its own: their images symlinked,
    their rows of captions.tsv."""
    import csv

    with (source / "captions.tsv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in keep:
        link = folder / "images" / name
        if not link.exists():
            link.symlink_to((source / "images" / name).resolve())
    with (folder / "captions.tsv").open("w") as f:
        f.write("\t".join(rows[0]) + "\n")
        f.writelines("\t".join(r) + "\n" for r in rows[1:] if r[0] in keep)
    return folder


def run_build_models(args: argparse.Namespace) -> int:
    from services.caption.models import MODELS_DIR

    settings = get_settings()
    root = args.datasets or settings.datasets_dir
    out_dir = args.out_dir or MODELS_DIR
    cache_dir = args.cache_dir or settings.cache_dir
    flickr, *others = [root / name for name in DEFAULT_TRAINING_SETS]
    train, val = split_folder(flickr, cache_dir / "splits", HELD_OUT)
    data = [train, *others]
    names = f"{train.name} + {', '.join(DEFAULT_TRAINING_SETS[1:])}"
    common = {"coco": [], "cache_dir": cache_dir, "device": args.device, "seed": 0,
              "data": data, "image_size": None, "val": val}
    if "projection" in args.only:
        print(f"1/2 the projection head on {names}; choices on the {HELD_OUT} held-out photos "
              f"of {val}")
        run_train_projection(argparse.Namespace(
            **common, out=out_dir / "projection.pt", epochs=40, hidden=1024,
            text_weight=None, hub_beta=None))
    if "captioner" in args.only:
        print(f"2/2 the transformer captioner on {names}; the epoch kept by BLEU-4 on the "
              f"{HELD_OUT} held-out photos of {val}")
        run_train_captioner(argparse.Namespace(
            **common, arch="transformer", out=out_dir / "captioner.pt",
            epochs=CAPTIONER_EPOCHS, lr=6e-4, hidden=None, beam=3))
    if "onnx" in args.only:
        for path in export_serving_models(settings.model_copy(update={"cache_dir": cache_dir})):
            print(f"ONNX Runtime export: {path}")
    return 0


def export_serving_models(settings: Settings) -> list[Path]:
    """The ONNX exports the CPU services will load with these settings (the CNN and MiniLM
    in their precisions), made into `settings.cache_dir/onnx` now rather than at first start
    (a container image bakes them in: its pods' root filesystem is read-only)."""
    from services.caption.captioners.backbone_export import export_backbone
    from services.encoder.encoder import build_text_encoder
    from services.encoder.export import export_encoder

    backbone = EfficientNetBackbone(**(backbone_options(settings) | {"device": "cpu",
                                                                      "runtime": "onnx"}))
    encoder = build_text_encoder(settings.model_copy(update={"device": "cpu",
                                                             "encoder_runtime": "onnx"}))
    paths = [export_backbone(backbone.module, name=backbone.name,
                             image_size=backbone.image_size, precision=backbone.precision,
                             cache_dir=settings.cache_dir,
                             calibration=backbone.calibration_pixels),
             export_encoder(encoder.model_dir, name=encoder.name, precision=encoder.precision,
                            cache_dir=settings.cache_dir)]
    backbone.close()
    return paths


def add_build_models(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("build-models",
                       help="train the default models shipped in services/caption/models/")
    p.add_argument("--datasets", type=Path, default=None,
                   help="the shared data folder (default CAPSEARCH_DATASETS_DIR)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where to write projection.pt and captioner.pt (default: the "
                        "package's)")
    p.add_argument("--only", nargs="+", choices=["projection", "captioner", "onnx"],
                   default=["projection", "captioner", "onnx"],
                   help="build only these (onnx: the CPU services' ONNX Runtime exports of "
                        "the CNN and MiniLM into the cache dir, as the settings choose them)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_build_models)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_train_captioner(sub)
    add_train_projection(sub)
    add_build_models(sub)

