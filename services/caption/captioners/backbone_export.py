"""The backbone's pass as a plain network (batch norms folded) and its ONNX exports.

`Passes` is the one pass every runtime runs: (bottleneck, head features, ImageNet logits).
torch runs it eagerly (GPU, or `CAPSEARCH_BACKBONE_RUNTIME=torch`); ONNX Runtime runs its
export (`export_backbone`), made once into the cache dir, keyed by everything that decides it.
`int8` is a static QDQ quantisation (per-channel weights, activations calibrated on photos);
EfficientNet-Lite was designed for it (ReLU6, no squeeze-excite).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from shared.onnxrt import OPSET, cached_export, onnx_export, state_digest

log = logging.getLogger(__name__)

# bump when the exported graph or its quantisation changes for the same weights and settings
EXPORT_VERSION = 1
OUTPUTS = ["bottleneck", "features", "logits"]
BACKBONE_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")
# photos the int8 activations are calibrated on (more moves the ranges by little)
CALIBRATION_PHOTOS = 64

Calibration = Callable[[], Sequence[NDArray[np.float32]]]


class Passes(torch.nn.Module):
    """One full pass: (bottleneck, head features, ImageNet logits)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        bottleneck, features = extract_features(model, batch)
        logits = model._fc(model._dropout(model._avg_pooling(features).flatten(1)))
        return bottleneck, features, logits


def extract_features(model: Any, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`EfficientNet.extract_features` that also keeps the last block's output: (bottleneck
    (B, C, G, G), head features (B, 1280, G, G)); no drop-connect (inference)."""
    x = model._swish(model._bn0(model._conv_stem(batch)))
    for block in model._blocks:
        x = block(x, drop_connect_rate=None)
    return x, model._swish(model._bn1(model._conv_head(x)))


def fold_batch_norms(model: Any) -> Any:
    """A copy of the network with every batch norm folded into the convolution before it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).float().cpu().eval()
    pairs = [(folded, "_conv_stem", "_bn0"), (folded, "_conv_head", "_bn1")]
    for block in folded._blocks:
        if block._block_args.expand_ratio != 1:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, norm in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
        setattr(owner, norm, torch.nn.Identity())
    return folded


def export_backbone(model: Any, *, name: str, image_size: int, precision: str,
                    cache_dir: Path, calibration: Calibration | None = None) -> Path:
    """The cached ONNX file of this network's pass at `image_size` px in `precision`
    (`fp32` | `int8`), exported on first use. The key covers the variant, the input size,
    a digest of the weights, the opset, the precision and `EXPORT_VERSION`; an int8 file also
    names its calibration, and needs `calibration()` (preprocessed photos) to be built."""
    parts: dict[str, Any] = {"model": name, "image_size": image_size,
                             "weights": state_digest(model), "opset": OPSET,
                             "export_version": EXPORT_VERSION, "batch": "dynamic"}

    def export_fp32(path: Path) -> None:
        example = torch.zeros(2, 3, image_size, image_size)
        onnx_export(Passes(fold_batch_norms(model)), (example,), path,
                    input_names=["pixels"], output_names=OUTPUTS,
                    dynamic_axes={n: {0: "batch"} for n in ["pixels", *OUTPUTS]})

    fp32 = cached_export(cache_dir, f"{name}-{image_size}px-fp32", parts, export_fp32)
    if precision == "fp32":
        return fp32
    if precision != "int8":
        raise ValueError(f"backbone precision must be fp32 or int8, not {precision!r}")
    if calibration is None:
        raise ValueError("an int8 backbone needs calibration photos")

    def quantise(path: Path) -> None:
        quantise_static(fp32, path, calibration())

    return cached_export(cache_dir, f"{name}-{image_size}px-int8",
                         {**parts, "precision": "int8-qdq-per-channel-7bit-percentile",
                          "calibration": f"{CALIBRATION_PHOTOS} training photos"}, quantise)


def quantise_static(source: Path, target: Path, pixels: Sequence[NDArray[np.float32]]) -> None:
    """Static int8 (QDQ, per-channel 7-bit weights, percentile activation ranges) of an fp32 export,
    calibrated on preprocessed photos (3, S, S) fed four at a time."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.stack(pixels[i:i + 4]).astype(np.float32) for i in range(0, len(pixels), 4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(self._it, None)
            return None if batch is None else {"pixels": batch}

    prepared = target.with_name(target.stem + ".pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        # 7-bit weights (reduce_range): without VNNI, x86's u8×s8 multiply saturates at full
        # range; percentile ranges (99.999 %) clip the rare outliers MinMax would stretch to
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile)
    finally:
        prepared.unlink(missing_ok=True)
