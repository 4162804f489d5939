"""A BERT-family checkpoint as ONNX for ONNX Runtime: exported, fused by ORT's own transformer
optimizer, and (int8) quantised by ORT's `quantize_dynamic`; each step cached in the cache dir.

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` when the model takes them),
batch and sequence dynamic, and gives `last_hidden_state`; pooling and the norm stay in numpy
(`encoder.py`), the same code for every runtime.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from shared.onnxrt import OPSET, cached_export, onnx_export

# bump when the exported graph, its fusions or its quantisation change for the same checkpoint
EXPORT_VERSION = 1
ENCODER_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")
# the checkpoint's files that decide the network (the tokenizer runs in Python either way)
WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def checkpoint_digest(model_dir: Path) -> str:
    """A digest of the checkpoint's config and weight files (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        digest.update(name.encode())
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:20]


def export_encoder(model_dir: Path, *, name: str, precision: str, cache_dir: Path) -> Path:
    """The cached ONNX file of the checkpoint in `precision` (`fp32` | `int8`), built on first
    use: export (opset `OPSET`), ORT's BERT fusions (attention, layer norm, GELU), and for
    int8 dynamic quantisation of the fused graph's matmuls and attention."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    parts: dict[str, Any] = {"model": name, "weights": checkpoint_digest(model_dir),
                             "opset": OPSET, "export_version": EXPORT_VERSION,
                             "batch": "dynamic", "sequence": "dynamic"}
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)

    def export_fp32(path: Path) -> None:
        raw = path.with_name(path.stem + ".raw.onnx")
        try:
            _export_raw(model_dir, raw)
            _optimise(raw, path, config)
        finally:
            raw.unlink(missing_ok=True)

    fp32 = cached_export(cache_dir, f"{slug}-fp32", {**parts, "fused": "ort-bert"},
                         export_fp32)
    if precision == "fp32":
        return fp32
    if precision != "int8":
        raise ValueError(f"encoder precision must be fp32 or int8, not {precision!r}")

    def quantise(path: Path) -> None:
        import onnx

        quantise_int8(fp32, path, exclude=feed_forward_outputs(onnx.load(str(fp32))))

    int8 = {**parts, "fused": "ort-bert",
            "precision": "int8-dynamic-per-channel-7bit-ffn-out-fp32"}
    return cached_export(cache_dir, f"{slug}-int8", int8, quantise)


def quantise_int8(fp32: Path, out: Path, *, exclude: list[str]) -> None:
    """ORT's dynamic int8 of an fp32 export, every matmul and attention but the `exclude`d
    nodes (the served int8 leaves out `feed_forward_outputs`)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the fused graph's contrib ops (Attention, SkipLayerNormalization) escape ONNX's shape
    # inference: their outputs are float, which the quantiser must be told.
    # per-channel weights in 7 bits (reduce_range): without VNNI, x86's u8×s8 multiply
    # saturates at full range; MiniLM's vectors were within 0.93 cosine of fp32's (mean 0.962)
    # per-tensor at 8 bits, 0.986 (mean 0.993) like this (flickr8k captions)
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, nodes_to_exclude=exclude,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


def feed_forward_outputs(model: Any) -> list[str]:
    """The matmuls that read a GELU's output: each block's feed-forward output layer, whose
    inputs carry the outliers that per-tensor activation scales quantise worst (Bondarenko et
    al. 2021). Left in fp32, int8 MiniLM stays within 0.5 R@K of fp32 (docs/quality.md)."""
    gelu = {"Gelu", "BiasGelu", "FastGelu"}
    made_by = {out: node.op_type for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and made_by.get(node.input[0]) in gelu]


def _export_raw(model_dir: Path, path: Path) -> None:
    import torch
    from transformers import AutoModel

    # eager attention: the plain matmul-softmax pattern ORT's attention fusion recognises
    model = AutoModel.from_pretrained(model_dir, local_files_only=True,
                                      attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    # segment ids only where the architecture takes them (DistilBERT's forward names none)
    if getattr(model.config, "type_vocab_size", 0) and "token_type_ids" in inspect.signature(
            model.forward).parameters:
        names.append("token_type_ids")

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    # segment 0: a model with one segment type (XLM-R's type_vocab_size 1) has no segment 1
    example = tuple((torch.zeros if n == "token_type_ids" else torch.ones)(2, 8, dtype=torch.int64)
                    for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    onnx_export(Hidden(), example, path, input_names=names,
                output_names=["last_hidden_state"], dynamic_axes=axes)


def _optimise(source: Path, target: Path, config: dict[str, Any]) -> None:
    """ORT's transformer optimizer for BERT graphs (offline: the fused graph is what is
    cached, so every start loads it ready)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type="bert",
                           num_heads=int(config.get("num_attention_heads", 0)),
                           hidden_size=int(config.get("hidden_size", 0)), opt_level=1)
    model.save_model_to_file(str(target))
