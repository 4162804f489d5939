"""CNN features of training photos, computed once and cached on disk.

Heads and decoders train on frozen EfficientNet-Lite0 features, so an epoch on the CPU costs
milliseconds once every photo has been through the CNN. A photo is seen under several *views*
(the production centre crop, its mirror image, the whole photo squashed, crops at both ends of
the long side, ...) as cheap data augmentation. The cache key covers the files (path, size,
mtime), the views and the backbone, so a changed photo or preprocessing is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import (
    MEAN,
    STD,
    EfficientNetBackbone,
)
from services.caption.projection import GEM_P, HEAD_INPUT_DIM, head_input
from services.caption.training.progress import progress_bar
from shared.images import decode_rgb

log = logging.getLogger(__name__)

CACHE_VERSION = 3
Pixels = NDArray[np.float32]
View = Callable[[Image.Image, EfficientNetBackbone], Pixels]


def _scaled(pixels: NDArray[np.uint8]) -> Pixels:
    return ((pixels.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def _squash(image: Image.Image, backbone: EfficientNetBackbone) -> Pixels:
    """The whole photo resized to S×S (aspect ignored: nothing is cropped away)."""
    size = backbone.image_size
    return _scaled(np.asarray(image.resize((size, size), Image.Resampling.BICUBIC)))


def _end_crop(image: Image.Image, backbone: EfficientNetBackbone, which: int) -> Pixels:
    """Short side to S, then the S-square at the start (0) or end (1) of the long side."""
    crop = backbone.image_size
    w, h = image.size
    scale = crop / min(w, h)
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    resized = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    top = 0 if which == 0 else size[1] - crop
    left = 0 if which == 0 else size[0] - crop
    return _scaled(resized[top:top + crop, left:left + crop])


def _centre(image: Image.Image, backbone: EfficientNetBackbone) -> Pixels:
    return backbone.preprocess(image)


def _flipped(fn: View) -> View:
    return lambda image, backbone: np.ascontiguousarray(fn(image, backbone)[:, :, ::-1])


VIEWS: dict[str, View] = {
    "centre": _centre,  # what the caption worker sees: view 0 is always this one
    "flip": _flipped(_centre),
    "full": _squash,
    "full-flip": _flipped(_squash),
    "end-a": lambda image, backbone: _end_crop(image, backbone, 0),
    "end-b": lambda image, backbone: _end_crop(image, backbone, 1),
    "end-a-flip": _flipped(lambda image, backbone: _end_crop(image, backbone, 0)),
    "end-b-flip": _flipped(lambda image, backbone: _end_crop(image, backbone, 1)),
}
DEFAULT_VIEWS = ("centre", "flip")
CACHED_MAP_VIEWS = 2  # feature maps kept in the cache (the decoder trains on centre + flip)


@dataclass(frozen=True)
class FeatureSet:
    """Features of N photos under V views: the projection head's input (V, N, 1600), logits
    (V, N, 1000) and, for the first M views, the G×G grid as regions (M, N, G·G, 1280);
    float16."""

    paths: tuple[Path, ...]
    views: tuple[str, ...]
    pooled: NDArray[np.float16]
    logits: NDArray[np.float16]
    maps: NDArray[np.float16] | None

    def take(self, indices: Sequence[int]) -> FeatureSet:
        rows = np.asarray(indices, dtype=np.int64)
        return FeatureSet(tuple(self.paths[i] for i in rows), self.views,
                          self.pooled[:, rows], self.logits[:, rows],
                          None if self.maps is None else self.maps[:, rows])


def cache_key(paths: Sequence[Path], views: Sequence[str],
              backbone: EfficientNetBackbone) -> str:
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    parts = [CACHE_VERSION, backbone.name, backbone.image_size, backbone.short_side, GEM_P,
             list(views), CACHED_MAP_VIEWS, files]
    # keys of Lite0, cropped, fp32 stay what they were before these settings
    if backbone.resize != "crop":
        parts.append(backbone.resize)
    if backbone.precision != "fp32":
        parts.append(backbone.precision)
    blob = json.dumps(parts)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def extract_features(paths: Sequence[Path], backbone: EfficientNetBackbone, *,
                     views: Sequence[str] = DEFAULT_VIEWS, map_views: int = 1,
                     batch_size: int = 32, desc: str = "CNN features") -> FeatureSet:
    """Run every photo under every view through the CNN (one pass per view and batch)."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown views {unknown}; known: {', '.join(VIEWS)}")
    n, v = len(paths), len(views)
    pooled: NDArray[np.float16] | None = None  # its width is the variant's (Lite2: 1632)
    logits = np.zeros((v, n, 1000), np.float16)
    grid = -(-backbone.image_size // 32)  # the network downsamples 32×
    maps = np.zeros((map_views, n, grid * grid, 1280), np.float16) if map_views else None
    backbone.load()
    device = backbone.device
    with progress_bar(total=n * v, desc=desc, unit="view") as bar:
        for start in range(0, n, batch_size):
            images = [decode_rgb(Path(p).read_bytes()) for p in paths[start:start + batch_size]]
            for vi, view in enumerate(views):
                batch = torch.from_numpy(np.stack([VIEWS[view](img, backbone) for img in images]))
                if device.type == "cpu":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                out = backbone.forward_tensor(batch.to(device))
                rows = slice(start, start + len(images))
                head = head_input(out, GEM_P).numpy()
                if pooled is None:
                    pooled = np.zeros((v, n, head.shape[1]), np.float16)
                pooled[vi, rows] = head
                logits[vi, rows] = out.logits.float().cpu().numpy()
                if maps is not None and vi < map_views:
                    maps[vi, rows] = out.regions().float().cpu().numpy()
                bar.update(len(images))
    if pooled is None:  # no photos
        pooled = np.zeros((v, 0, HEAD_INPUT_DIM), np.float16)
    return FeatureSet(tuple(paths), tuple(views), pooled, logits, maps)


def cache_file(paths: Sequence[Path], cache_dir: Path, backbone: EfficientNetBackbone,
               views: Sequence[str] = DEFAULT_VIEWS) -> Path:
    """Where `cached_features` keeps these photos' features."""
    return Path(cache_dir) / f"features-{cache_key([Path(p) for p in paths], views, backbone)}.npz"


def cached_features(paths: Sequence[Path], cache_dir: Path, backbone: EfficientNetBackbone,
                    *, views: Sequence[str] = DEFAULT_VIEWS, map_views: int = 1,
                    batch_size: int = 32, desc: str = "CNN features") -> FeatureSet:
    """`extract_features` through a cache file under `cache_dir` (written atomically).

    The file always keeps the maps of the first `CACHED_MAP_VIEWS` views, so one extraction
    serves the decoder and the head; `map_views` only says whether to load them."""
    paths = [Path(p) for p in paths]
    file = cache_file(paths, cache_dir, backbone, views)
    keep = min(CACHED_MAP_VIEWS, len(views))
    if map_views > keep:
        raise ValueError(f"at most {keep} views keep their maps")
    if not file.is_file():
        features = extract_features(paths, backbone, views=views, map_views=keep,
                                    batch_size=batch_size, desc=desc)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, pooled=features.pooled, logits=features.logits,
                 maps=features.maps if features.maps is not None else np.zeros(0, np.float16))
        tmp.replace(file)
        log.info("cached CNN features of %d photos in %s", len(paths), file)
        # what was just computed, not a second copy read back from the file
        maps = features.maps[:map_views] if map_views and features.maps is not None else None
        return replace(features, maps=maps)
    with np.load(file) as data:
        maps = data["maps"][:map_views] if map_views else None
        return FeatureSet(tuple(paths), tuple(views), data["pooled"], data["logits"], maps)


def read_maps(files: Sequence[Path], map_views: int,
              chunk: int = 64 << 20) -> NDArray[np.float16]:
    """The cached region maps of several feature files (their first `map_views` views) as one
    (map_views, photos of all files, G·G, 1280) array, read from the files straight into it:
    no per-file copy beside the joined one (the decoder's training set is ~2 GB of them)."""
    headers = []
    for file in files:
        with zipfile.ZipFile(file) as archive, archive.open("maps.npy") as f:
            headers.append(_npy_header(f, file))
    grid = headers[0][2:]
    if any(h[0] < map_views or h[2:] != grid for h in headers):
        raise ValueError(f"the feature files' maps differ in shape: {headers}")
    out = np.empty((map_views, sum(h[1] for h in headers), *grid), np.float16)
    start = 0
    for file, (_, n, *_) in zip(files, headers, strict=True):
        with zipfile.ZipFile(file) as archive, archive.open("maps.npy") as f:
            _npy_header(f, file)
            for view in range(map_views):  # a file holds its views one after the other
                target = memoryview(out[view, start:start + n]).cast("B")
                for offset in range(0, len(target), chunk):
                    part = target[offset:offset + chunk]
                    if f.readinto(part) != len(part):
                        raise ValueError(f"{file}: its maps end early")
        start += n
    return out


def _npy_header(f: BinaryIO, file: Path) -> tuple[int, ...]:
    """Read an .npy header; the shape of a C-ordered float16 array, else ValueError."""
    fmt = np.lib.format
    read = (fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0)
            else fmt.read_array_header_2_0)
    shape, fortran, dtype = read(f)
    if fortran or dtype != np.float16 or len(shape) != 4:
        raise ValueError(f"{file}: maps of shape {shape}, {dtype}, fortran {fortran}")
    return tuple(shape)
