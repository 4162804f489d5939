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

Then candidates without all pairs, for the chosen space: (1) the k = 8 nearest neighbours
from the search service's IVF index (services/search), over the chosen space or a smaller
one (`--index-space`, confirmation stays in the chosen space): the share of confirmable
copies whose original is among them; (2) random-hyperplane band keys on centred vectors:
the same share, and the share of distinct pairs that collide (candidates per photo at 1M
photos, extrapolated); with `--scale N` the cost of the IVF path on N synthetic vectors of
the index space (fit, add, one new photo, every photo).

    python bench/duplicates_eval.py [--fit 1000] [--every 3] [--scale 1000000] [--json]

With --json the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import datasets_dir  # noqa: E402
from bench.machine import describe, describe_machine, print_figures  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.duplicates import DuplicateSpace, unit_rows  # noqa: E402

FEATURES_VERSION = 1
THRESHOLDS = (0.6, 0.7, 0.725, 0.75, 0.775, 0.8, 0.825, 0.85, 0.9, 0.95, 0.975)
# the edits a person would call "the same photo"; resize30 of a 500 px photo is a 150 px
# thumbnail, gray and flip change the picture: reported, not used to choose
LIGHT = ("resize60_q70", "reencode_q50", "crop5", "crop10", "rotate3", "bright", "dark",
         "contrast", "saturate", "combo")
BAND_GRID = ((16, 16), (32, 12), (64, 12), (64, 8), (128, 8))
MAX_FALSE = 2  # of 216,811 distinct pairs: a false-pair rate of about 1e-5


def band_keys(vectors: np.ndarray, bands: int, bits: int, seed: int = 19) -> np.ndarray:
    """Random-hyperplane (SimHash) sign bits cut into `bands` integer keys of `bits` bits."""
    planes = np.random.default_rng(seed).standard_normal((vectors.shape[1], bands * bits))
    signs = ((vectors @ planes.astype(np.float32)) > 0).reshape(len(vectors), bands, bits)
    return (signs.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=2)


def colliding_pairs(keys: np.ndarray) -> int:
    """Distinct row pairs that share a key in at least one band."""
    pairs: set[tuple[int, int]] = set()
    for band in keys.T:
        buckets: dict[int, list[int]] = {}
        for row, key in enumerate(band.tolist()):
            buckets.setdefault(key, []).append(row)
        for rows in buckets.values():
            pairs.update((a, b) for i, a in enumerate(rows) for b in rows[i + 1:])
    return len(pairs)


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
    from services.caption.projection import ImageProjection
    from services.encoder.encoder import build_text_encoder

    settings = get_settings()
    # the worker's CNN pass and head: variant, size, resize, runtime, precision from settings
    projection = ImageProjection.from_settings(settings)
    backbone = projection.backbone
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
    return spaces[kind].project(feats[f"gem3-{variant}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", type=int, default=1000, help="flickr8k-train photos the "
                        "centring and PCA are fitted on")
    parser.add_argument("--every", type=int, default=3, help="edit every n-th photo")
    parser.add_argument("--dims", default="128,256")
    parser.add_argument("--space", default=None, help="the space to study candidates in "
                        "(default: the one with the best recall at its threshold)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--index-space", default="gem3-proj256", help="a smaller space the "
                        "IVF index may hold instead (candidates only; confirmation stays)")
    parser.add_argument("--no-text", action="store_true", help="skip the text-space vectors")
    parser.add_argument("--scale", type=int, default=0, help="synthetic vectors for the cost "
                        "of grouping at scale (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    datasets = datasets_dir(settings)
    cache = settings.cache_dir / "dup-eval"
    edits = list(EDITS)
    paths = photos(datasets)
    tag = (f"{settings.backbone_model}-{settings.backbone_image_size}px-"
           f"{settings.backbone_resize}-{settings.backbone_precision}")
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

    spaces = {"gem3-raw": DuplicateSpace.identity(fit.shape[1]),
              "gem3-centred": DuplicateSpace(unit_rows(fit).mean(axis=0),
                                             np.eye(fit.shape[1], dtype=np.float32))}
    for d in (int(x) for x in args.dims.split(",")):
        spaces[f"gem3-pca{d}"] = DuplicateSpace.fit(fit, dim=d, centre=True)
        spaces[f"gem3-proj{d}"] = DuplicateSpace.fit(fit, dim=d)
    kinds = [*spaces] + ([] if args.no_text else ["text-fused", "text-image"])
    report: dict[str, dict] = {}
    for kind in kinds:
        base = space_vectors(kind, feats, "original", spaces)
        negatives = distinct_scores(base)
        sources = base[::args.every]
        positives = {e: np.einsum("ij,ij->i", sources, space_vectors(kind, feats, e, spaces))
                     for e in edits}
        report[kind] = summarise(kind, negatives, positives)
    top_pairs(space_vectors("gem3-raw", feats, "original", spaces), paths)

    chosen = args.space or pick_space(report)
    threshold = args.threshold or report[chosen]["threshold"]
    print(f"\nchosen: {chosen} at cosine >= {threshold} (light-edit recall "
          f"{report[chosen]['by_threshold'][str(threshold)]['light_recall']} %, false pairs "
          f"{report[chosen]['by_threshold'][str(threshold)]['false_pairs']})")
    base = space_vectors(chosen, feats, "original", spaces)
    copies = {e: space_vectors(chosen, feats, e, spaces) for e in edits}
    result = {"machine": describe_machine(), "photos": len(paths), "fit": len(fit), "cnn": tag,
              "spaces": report, "chosen": chosen, "threshold": threshold,
              "ivf": ivf_table(base, args.every, copies, threshold, chosen),
              "ivf_small": ivf_table(
                  base, args.every, copies, threshold, args.index_space,
                  space_vectors(args.index_space, feats, "original", spaces),
                  {e: space_vectors(args.index_space, feats, e, spaces) for e in edits}),
              "bands": lsh_table(base, args.every, copies, threshold)}
    if args.scale:
        result["scale"] = scale_cost(
            args.scale, space_vectors(args.index_space, feats, "original", spaces), threshold)
    print_figures(result, args.json)
    return 0


def summarise(kind: str, negatives: np.ndarray, positives: dict[str, np.ndarray]
              ) -> dict[str, object]:
    """Recall of each edit and false pairs per threshold; the threshold: the lowest of the grid
    at which at most `MAX_FALSE` distinct pairs pass (false-pair rate <= ~1e-5)."""
    light = np.concatenate([positives[e] for e in LIGHT])
    top_negative = float(negatives.max())
    floor = float(np.percentile(light, 1))
    threshold = min((t for t in THRESHOLDS if (negatives >= t).sum() <= MAX_FALSE),
                    default=THRESHOLDS[-1])
    rows = {}
    for t in THRESHOLDS:
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
    """The space whose light edits pass most often at its own threshold."""
    return max(report, key=lambda k: report[k]["by_threshold"][str(report[k]["threshold"])]
               ["light_recall"])


def top_pairs(v: np.ndarray, paths: list[Path], n: int = 6) -> None:
    """The most similar distinct photos: are they different photos, or the same scene?"""
    sims = v @ v.T
    i, j = np.triu_indices(len(v), k=1)
    order = np.argsort(-sims[i, j])[:n]
    print("\nmost similar distinct pairs (gem3-raw):")
    for o in order:
        print(f"  {sims[i[o], j[o]]:.3f}  {paths[i[o]].name}  {paths[j[o]].name}")


def lsh_table(base: np.ndarray, every: int, copies: dict[str, np.ndarray],
              threshold: float) -> dict[str, dict]:
    """Random-hyperplane band keys (on centred vectors: through the origin, every plane
    would put all photos on one side): candidate recall of the positives we would confirm,
    negative collisions, and candidates per photo at 1M photos."""
    mean = base.mean(axis=0)
    sources = base[::every]
    n = len(base)
    negatives = n * (n - 1) // 2
    print(f"\nband keys on centred vectors ({describe()}): candidate recall of positives at "
          f"cosine >= {threshold}, negative pairs that collide, and per photo at 1M photos")
    print(f"{'bands':>5} {'bits':>4} {'light rec':>9} {'all rec':>8} {'neg coll':>9} "
          f"{'neg rate':>9} {'cand/photo@1M':>13}")
    out = {}
    for bands, bits in BAND_GRID:
        keys = band_keys(base - mean, bands, bits)
        collide = colliding_pairs(keys)
        met_light = met_all = total_light = total_all = 0
        source_keys = band_keys(sources - mean, bands, bits)
        for edit, v in copies.items():
            same = (band_keys(v - mean, bands, bits) == source_keys).any(axis=1)
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
               "candidates_per_photo_at_1m": round(rate * 1_000_000, 1)}
        out[f"{bands}x{bits}"] = row
        print(f"{bands:>5} {bits:>4} {row['light_candidate_recall']:>9} "
              f"{row['candidate_recall']:>8} {collide:>9} {rate:>9.2e} "
              f"{row['candidates_per_photo_at_1m']:>13}")
    return out


def ivf_table(base: np.ndarray, every: int, copies: dict[str, np.ndarray], threshold: float,
              label: str, index_base: np.ndarray | None = None,
              index_copies: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """A new upload against the collection through the search service's IVF index: is the
    original among the copy's k nearest (k = 8), for the copies we would confirm? The index
    may hold another (smaller) space than the one confirming (`index_base`)."""
    from services.search.index import IVFIndex
    from services.search.quantizer import fit_quantizer

    index_base = base if index_base is None else index_base
    index_copies = copies if index_copies is None else index_copies
    index = IVFIndex(fit_quantizer(index_base, pca_components=min(64, index_base.shape[1])))
    index.add(np.arange(len(index_base)), index_base)
    sources = np.arange(len(base))[::every]
    print(f"\nIVF nearest neighbours in {label} ({describe()}): {index.n_clusters} lists over "
          f"{len(base)} photos; share of confirmable copies whose original is in their top 8")
    out = {}
    for nprobe in (1, 2, 4, 8):
        met_light = total_light = met_all = total_all = 0
        for edit, v in copies.items():
            ids, _ = index.search_batch(index_copies[edit], 8, nprobe)
            found = (ids == sources[:, None]).any(axis=1)
            close = np.einsum("ij,ij->i", base[sources], v) >= threshold
            met_all += int((found & close).sum())
            total_all += int(close.sum())
            if edit in LIGHT:
                met_light += int((found & close).sum())
                total_light += int(close.sum())
        out[str(nprobe)] = {"light_candidate_recall": round(100 * met_light / total_light, 2),
                            "candidate_recall": round(100 * met_all / total_all, 2)}
        print(f"  nprobe {nprobe}: light {out[str(nprobe)]['light_candidate_recall']} %, "
              f"all edits {out[str(nprobe)]['candidate_recall']} %")
    return out


def scale_cost(n: int, real: np.ndarray, threshold: float) -> dict[str, float]:
    """Grouping N synthetic vectors through an IVF index: fit, add, one new photo, all.

    Synthetic rows: noisy copies of the real vectors (cosine ~0.5 to their source, ~0.25
    between two copies of one source: clumps, as collections have), 1 % of them given a
    near copy at about the threshold + 0.1; recall is whether a planted copy finds its
    partner in its top 8."""
    from services.search.index import IVFIndex
    from services.search.quantizer import fit_quantizer

    rng = np.random.default_rng(0)
    dim = real.shape[1]
    v = unit_rows(real[rng.integers(0, len(real), n)] * 0.6
                  + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim))
    planted = rng.choice(n, n // 100, replace=False)
    a, b = planted[::2], planted[1::2][:len(planted[::2])]
    a = a[:len(b)]
    cos = min(0.97, threshold + 0.1)
    noise = rng.standard_normal((len(b), dim)).astype(np.float32)
    noise -= np.einsum("ij,ij->i", noise, v[a])[:, None] * v[a]
    v[b] = unit_rows(cos * v[a] + np.sqrt(1 - cos ** 2) * unit_rows(noise))
    out: dict[str, float] = {"vectors": n, "dim": dim, "planted_pairs": int(len(b))}
    began = time.perf_counter()
    index = IVFIndex(fit_quantizer(v, pca_components=min(64, dim)))
    out["fit_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    index.add(np.arange(n), v)
    out["add_s"] = round(time.perf_counter() - began, 1)
    out["nbytes_per_vector"] = round(index.nbytes / n, 1)
    for nprobe in (4, 8):
        probe = b[:500]
        began = time.perf_counter()
        hits = [index.search(v[i], 8, nprobe)[0] for i in probe]
        one = (time.perf_counter() - began) / len(probe)
        recall = float(np.mean([a[k] in ids for k, ids in enumerate(hits)]))
        sample = v[:20_000]
        began = time.perf_counter()
        index.search_batch(sample, 8, nprobe)
        per_photo = (time.perf_counter() - began) / len(sample)
        out[f"nprobe{nprobe}_one_photo_ms"] = round(one * 1e3, 3)
        out[f"nprobe{nprobe}_planted_recall"] = round(100 * recall, 2)
        out[f"nprobe{nprobe}_all_photos_s"] = round(per_photo * n, 1)
        print(f"\nscale {n:,} x {dim} ({describe()}), nprobe {nprobe}: fit {out['fit_s']} s, "
              f"add {out['add_s']} s, {out['nbytes_per_vector']} B/vector; one new photo "
              f"{one * 1e3:.2f} ms (planted partner found {100 * recall:.1f} %); every photo "
              f"{per_photo * n:.0f} s (batched, 1 thread)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
