"""Near-duplicate photos: which vector, which threshold, what false-pair rate, what candidates.

Edited copies of every third photo of flickr8k-dev and coco-mini-val (220 of 659) are the
positive pairs; all pairs of distinct photos of the same folders (216,811) are the negatives.
Edits (seeded):

    resize60_q70   60 % size, JPEG quality 70 (the issue's acceptance edit)
    reencode_q50   same size, JPEG quality 50
    resize30_q85   30 % size (a thumbnail), quality 85
    crop5, crop10  5 % / 10 % of width and height cut, split at random between the sides
    rotate3        3 degrees and cropped back to a rectangle without borders (a "straighten")
    bright, dark   brightness x1.25 / x0.75
    contrast       contrast x0.7
    saturate       colour saturation x1.5
    combo          crop 8 % + brightness x1.15 + 60 % + quality 70
    gray           greyscale (reported, not a "light" colour edit)
    flip           mirrored (reported: a different picture for most people)

Vectors (one EfficientNet-Lite0 pass at the service's size, CAPSEARCH_BACKBONE_IMAGE_SIZE):
`gem3-raw` unit GeM (p=3) of the head features; `gem3-centred` minus the mean of unrelated
photos; `gem3-pcaD` centred and PCA-reduced to D (mean and axes fitted on `--fit` photos of
flickr8k-train, never compared); `text-fused` the vector the search index serves
(text space); `text-image` the projection head's image vector (text space).

Then, for the chosen space, random-hyperplane band keys (shared/duplicates.py): the share of
positive pairs that meet as candidates, the share of negative pairs that do (their count per
photo at 1M photos, extrapolated), and with `--scale N` the cost of grouping N synthetic
vectors from scratch and of one new photo against N.

    python bench/duplicates_eval.py [--fit 1000] [--every 3] [--scale 1000000] [--json]

With --json the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import cpu_info, describe  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.duplicates import (  # noqa: E402
    BandHasher,
    DuplicateSpace,
    candidate_pairs,
    confirm,
    unit_rows,
)

FEATURES_VERSION = 1
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
LIGHT = ("resize60_q70", "reencode_q50", "resize30_q85", "crop5", "crop10", "rotate3",
         "bright", "dark", "contrast", "saturate", "combo")
BAND_GRID = ((16, 16), (32, 16), (64, 16), (32, 12), (64, 12), (32, 20), (64, 20), (128, 20))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def crop(image: Image.Image, share: float, rng: random.Random) -> Image.Image:
    cut_w, cut_h = image.width * share, image.height * share
    left, top = rng.uniform(0, cut_w), rng.uniform(0, cut_h)
    return image.crop((round(left), round(top), round(image.width - (cut_w - left)),
                       round(image.height - (cut_h - top))))


def straighten(image: Image.Image, degrees: float) -> Image.Image:
    turned = image.rotate(degrees, Image.Resampling.BICUBIC)
    # the largest centred rectangle without the corners the rotation brought in
    a = np.radians(abs(degrees))
    w, h = image.size
    cw = (w * np.cos(a) - h * np.sin(a)) / np.cos(2 * a)
    ch = (h * np.cos(a) - w * np.sin(a)) / np.cos(2 * a)
    left, top = (w - cw) / 2, (h - ch) / 2
    return turned.crop((round(left), round(top), round(left + cw), round(top + ch)))


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "resize60_q70": lambda im, r: jpeg(scaled(im, 0.6), 70),
    "reencode_q50": lambda im, r: jpeg(im, 50),
    "resize30_q85": lambda im, r: jpeg(scaled(im, 0.3), 85),
    "crop5": lambda im, r: jpeg(crop(im, 0.05, r), 90),
    "crop10": lambda im, r: jpeg(crop(im, 0.10, r), 90),
    "rotate3": lambda im, r: jpeg(straighten(im, r.choice((-3.0, 3.0))), 90),
    "bright": lambda im, r: jpeg(ImageEnhance.Brightness(im).enhance(1.25), 90),
    "dark": lambda im, r: jpeg(ImageEnhance.Brightness(im).enhance(0.75), 90),
    "contrast": lambda im, r: jpeg(ImageEnhance.Contrast(im).enhance(0.7), 90),
    "saturate": lambda im, r: jpeg(ImageEnhance.Color(im).enhance(1.5), 90),
    "combo": lambda im, r: jpeg(scaled(ImageEnhance.Brightness(crop(im, 0.08, r))
                                       .enhance(1.15), 0.6), 70),
    "gray": lambda im, r: jpeg(ImageOps.grayscale(im).convert("RGB"), 90),
    "flip": lambda im, r: jpeg(ImageOps.mirror(im), 90),
}


def photos(datasets: Path) -> list[Path]:
    out: list[Path] = []
    for name in ("flickr8k-dev", "coco-mini-val"):
        out += sorted((datasets / name / "images").glob("*.jpg"))
    return out


def fit_photos(datasets: Path, n: int) -> list[Path]:
    pool = sorted((datasets / "flickr8k-train" / "images").glob("*.jpg"))
    return random.Random(1).sample(pool, min(n, len(pool)))


def extract(paths: list[Path], edits: list[str], cache: Path, *, text: bool
            ) -> dict[str, np.ndarray]:
    """CNN features (and text-space vectors) of the photos, or of one edit of each, cached."""
    if cache.is_file():
        stored = dict(np.load(cache))
        if int(stored.get("version", -1)) == FEATURES_VERSION and \
                len(next(v for k, v in stored.items() if k != "version")) == len(paths):
            return stored
    from services.caption.captioners.backbone import EfficientNetBackbone
    from services.caption.projection import ImageProjection
    from services.encoder.encoder import build_text_encoder

    settings = get_settings()
    backbone = EfficientNetBackbone(image_size=settings.backbone_image_size,
                                    precision=settings.backbone_precision)
    projection = ImageProjection(settings.projection_checkpoint, backbone=backbone)
    encoder = build_text_encoder(settings) if text else None
    out: dict[str, list[np.ndarray]] = {}
    variants = edits or ["original"]
    started = time.perf_counter()
    for start in range(0, len(paths), 16):
        chunk = paths[start:start + 16]
        originals = [Image.open(p).convert("RGB") for p in chunk]
        for variant in variants:
            images = originals if variant == "original" else [
                EDITS[variant](im, random.Random(f"{p.name}/{variant}"))
                for im, p in zip(originals, chunk, strict=True)]
            result = backbone.forward(images)
            out.setdefault(f"gem3-{variant}", []).append(result.gem(3.0).numpy())
            if encoder is not None:
                embedding = projection.embed_output(result)
                served = projection.serve("fused", encoder.encode(embedding.texts),
                                          embedding.vectors)
                out.setdefault(f"text-fused-{variant}", []).append(served)
                out.setdefault(f"text-image-{variant}", []).append(
                    unit_rows(embedding.vectors))
        done = start + len(chunk)
        print(f"  features: {done}/{len(paths)} photos x {len(variants)} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}
    arrays["version"] = np.array(FEATURES_VERSION)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


def distinct_scores(v: np.ndarray) -> np.ndarray:
    """Cosines of all pairs of distinct rows (upper triangle)."""
    sims = v @ v.T
    return sims[np.triu_indices(len(v), k=1)]


def space_vectors(kind: str, feats: dict[str, np.ndarray], variant: str,
                  spaces: dict[str, DuplicateSpace]) -> np.ndarray:
    if kind.startswith("text-"):
        return unit_rows(feats[f"{kind}-{variant}"])
    gem = feats[f"gem3-{variant}"]
    if kind == "gem3-raw":
        return unit_rows(gem)
    return spaces[kind].project(gem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", type=int, default=1000, help="flickr8k-train photos the "
                        "centring and PCA are fitted on")
    parser.add_argument("--every", type=int, default=3, help="edit every n-th photo")
    parser.add_argument("--dims", default="64,128,256")
    parser.add_argument("--no-text", action="store_true", help="skip the text-space vectors")
    parser.add_argument("--scale", type=int, default=0, help="synthetic vectors for the cost "
                        "of grouping at scale (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    datasets = settings.datasets_dir
    if not datasets.is_absolute():
        datasets = Path(__file__).resolve().parent.parent / datasets
    cache = settings.cache_dir / "dup-eval"
    edits = list(EDITS)
    paths = photos(datasets)
    tag = f"{settings.backbone_image_size}px-{settings.backbone_precision}"
    text = not args.no_text
    feats = extract(paths, [], cache / f"eval-{tag}.npz", text=text)
    edited = paths[::args.every]  # edits of every n-th photo (the CNN passes are the cost)
    feats.update({k: v for k, v in extract(edited, edits, cache / f"edits{args.every}-{tag}.npz",
                                           text=text).items() if k != "version"})
    fit = extract(fit_photos(datasets, args.fit), [], cache / f"fit{args.fit}-{tag}.npz",
                  text=False)["gem3-original"]
    print(f"machine: {describe()}")
    print(f"photos: {len(paths)} (flickr8k-dev + coco-mini-val), distinct pairs "
          f"{len(paths) * (len(paths) - 1) // 2:,}; fit: {len(fit)} flickr8k-train photos; "
          f"CNN {tag}")

    spaces = {"gem3-centred": DuplicateSpace(unit_rows(fit).mean(axis=0),
                                             np.eye(fit.shape[1], dtype=np.float32))}
    for d in (int(x) for x in args.dims.split(",")):
        spaces[f"gem3-pca{d}"] = DuplicateSpace.fit(fit, dim=d)
    kinds = ["gem3-raw", *spaces] + ([] if args.no_text else ["text-fused", "text-image"])
    report: dict[str, dict] = {}
    for kind in kinds:
        base = space_vectors(kind, feats, "original", spaces)
        negatives = distinct_scores(base)
        sources = base[::args.every]
        positives = {e: np.einsum("ij,ij->i", sources, space_vectors(kind, feats, e, spaces))
                     for e in edits}
        report[kind] = summarise(kind, negatives, positives)

    chosen = pick_space(report)
    threshold = report[chosen]["threshold"]
    print(f"\nchosen: {chosen} at cosine >= {threshold}")
    base = space_vectors(chosen, feats, "original", spaces)
    copies = {e: space_vectors(chosen, feats, e, spaces) for e in edits}
    bands = lsh_table(base, base[::args.every], copies, threshold)
    result = {"machine": cpu_info(), "photos": len(paths), "fit": len(fit), "cnn": tag,
              "spaces": report, "chosen": chosen, "threshold": threshold, "bands": bands}
    if args.scale:
        result["scale"] = scale_cost(args.scale, spaces[chosen] if chosen in spaces else None,
                                     base, threshold)
    if args.json:
        print(json.dumps(result))
    return 0


def summarise(kind: str, negatives: np.ndarray, positives: dict[str, np.ndarray]
              ) -> dict[str, object]:
    """Recall of each edit and false pairs per threshold; the threshold: halfway between the
    largest negative and the 1st percentile of the light edits, when there is a gap."""
    light = np.concatenate([positives[e] for e in LIGHT])
    top_negative = float(negatives.max())
    floor = float(np.percentile(light, 1))
    threshold = round((top_negative + floor) / 2, 3) if floor > top_negative else None
    rows = {}
    for t in (*THRESHOLDS, *([threshold] if threshold else [])):
        rows[str(t)] = {"false_pairs": int((negatives >= t).sum()),
                        "false_rate": float((negatives >= t).mean()),
                        "light_recall": round(100 * float((light >= t).mean()), 2),
                        **{e: round(100 * float((p >= t).mean()), 1)
                           for e, p in positives.items()}}
    print(f"\n{kind}: negatives mean {negatives.mean():.3f}, 99.99th pct "
          f"{np.percentile(negatives, 99.99):.3f}, max {top_negative:.3f}; light edits 1st pct "
          f"{floor:.3f}, min {light.min():.3f}; threshold {threshold}")
    names = list(positives)
    print(f"{'t':>6} {'false':>6} {'light':>6} " + " ".join(f"{e[:9]:>9}" for e in names))
    for t, row in rows.items():
        print(f"{t:>6} {row['false_pairs']:>6} {row['light_recall']:>6} "
              + " ".join(f"{row[e]:>9}" for e in names))
    return {"negatives_mean": float(negatives.mean()), "negatives_max": top_negative,
            "negatives_p9999": float(np.percentile(negatives, 99.99)),
            "light_p1": floor, "light_min": float(light.min()), "threshold": threshold,
            "by_threshold": rows}


def pick_space(report: dict[str, dict]) -> str:
    """The space with the widest gap between negatives and the light edits' 1st percentile."""
    return max(report, key=lambda k: report[k]["light_p1"] - report[k]["negatives_max"])


def lsh_table(base: np.ndarray, sources: np.ndarray, copies: dict[str, np.ndarray],
              threshold: float) -> dict[str, dict]:
    """Candidate recall (positives sharing a band key) and negative collisions per setting."""
    n = len(base)
    negatives = n * (n - 1) // 2
    print(f"\nband keys ({describe()}): candidate recall of positives at cosine >= "
          f"{threshold}, negative pairs that collide, and per photo at 1M photos")
    print(f"{'bands':>5} {'bits':>4} {'light rec':>9} {'all rec':>8} {'neg coll':>9} "
          f"{'neg rate':>9} {'cand/photo@1M':>13} {'P(s=thr)':>8}")
    out = {}
    for bands, bits in BAND_GRID:
        hasher = BandHasher(base.shape[1], bands=bands, bits=bits)
        keys = hasher.keys(base)
        collide = len(candidate_pairs(keys, max_bucket=10 ** 9))
        met_light = met_all = total_light = total_all = 0
        source_keys = hasher.keys(sources)
        for edit, v in copies.items():
            same = (hasher.keys(v) == source_keys).any(axis=1)
            close = np.einsum("ij,ij->i", sources, v) >= threshold  # only pairs we would confirm
            met_all += int((same & close).sum())
            total_all += int(close.sum())
            if edit in LIGHT:
                met_light += int((same & close).sum())
                total_light += int(close.sum())
        rate = collide / negatives
        row = {"light_candidate_recall": round(100 * met_light / max(total_light, 1), 2),
               "candidate_recall": round(100 * met_all / max(total_all, 1), 2),
               "negative_collisions": collide, "negative_rate": rate,
               "candidates_per_photo_at_1m": round(rate * 1_000_000, 1),
               "p_candidate_at_threshold": round(hasher.candidate_probability(threshold), 4)}
        out[f"{bands}x{bits}"] = row
        print(f"{bands:>5} {bits:>4} {row['light_candidate_recall']:>9} "
              f"{row['candidate_recall']:>8} {collide:>9} {rate:>9.2e} "
              f"{row['candidates_per_photo_at_1m']:>13} {row['p_candidate_at_threshold']:>8}")
    return out


def scale_cost(n: int, space: DuplicateSpace | None, real: np.ndarray, threshold: float
               ) -> dict[str, float]:
    """Grouping N synthetic vectors from scratch, and one new photo against them.

    Synthetic rows: noisy copies of the real vectors (cosine ~0.5 to their source, ~0.25
    between two copies of one source: clumps, as collections have), 1 % of them given a near
    copy (cosine ~0.9). The candidate count is better read off the real collision rate
    (`lsh_table`); the times are what this gives."""
    del space
    rng = np.random.default_rng(0)
    dim = real.shape[1]
    src = rng.integers(0, len(real), n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (1.0 / np.sqrt(dim))
    v = unit_rows(real[src] * 0.6 + noise)
    dup = rng.choice(n, n // 100, replace=False)
    v[dup[1::2]] = unit_rows(v[dup[::2]] + 0.45 * rng.standard_normal(
        (len(dup[1::2]), dim)).astype(np.float32) / np.sqrt(dim))
    out: dict[str, float] = {"vectors": n}
    for bands, bits in ((16, 16), (16, 20), (32, 20)):
        hasher = BandHasher(dim, bands=bands, bits=bits)
        began = time.perf_counter()
        keys = hasher.keys(v)
        t_keys = time.perf_counter() - began
        began = time.perf_counter()
        pairs = candidate_pairs(keys)
        t_pairs = time.perf_counter() - began
        began = time.perf_counter()
        kept, _ = confirm(pairs, v, threshold)
        t_confirm = time.perf_counter() - began
        # one new photo: a lookup per band in sorted keys (what a (band, key) index does)
        order = np.argsort(keys, axis=0)
        sorted_keys = np.take_along_axis(keys, order, axis=0)
        probe = v[dup[0]][None, :]
        began = time.perf_counter()
        reps = 200
        found = 0
        for _ in range(reps):
            k = hasher.keys(probe)[0]
            rows = set()
            for b in range(bands):
                lo, hi = np.searchsorted(sorted_keys[:, b], [k[b], k[b] + 1])
                rows.update(order[lo:hi, b].tolist())
            cand = np.fromiter(rows, dtype=np.int64)
            found = int((v[cand] @ probe[0] >= threshold).sum())
        t_one = (time.perf_counter() - began) / reps
        label = f"{bands}x{bits}"
        out.update({f"{label}_keys_s": round(t_keys, 2), f"{label}_pairs_s": round(t_pairs, 2),
                    f"{label}_confirm_s": round(t_confirm, 2),
                    f"{label}_candidate_pairs": int(len(pairs)),
                    f"{label}_confirmed_pairs": int(len(kept)),
                    f"{label}_planted_pairs": int(len(dup) // 2),
                    f"{label}_one_photo_ms": round(t_one * 1e3, 3),
                    f"{label}_one_photo_matches": found})
        print(f"\nscale {n:,} ({describe()}), {label}: keys {t_keys:.1f} s, candidate pairs "
              f"{len(pairs):,} in {t_pairs:.1f} s, confirmed {len(kept):,} (planted "
              f"{len(dup) // 2:,}) in {t_confirm:.1f} s; one new photo {t_one * 1e3:.2f} ms")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
