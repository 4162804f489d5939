"""ONNX Runtime for the models' CPU passes: exports kept in the cache dir, sessions made one way.

The torch models are exported once into `<cache_dir>/onnx/`, each file named by a digest of
everything that decides its content (the model, its input size, a digest of its weights, the
opset, the precision and the export code's version), so a changed input changes the name and
nothing stale is ever loaded; nothing is downloaded. `capsearch build-models --only onnx`
makes them ahead of time (a container image, a read-only cache), and the first start makes
whatever is missing.

onnxruntime and onnx are imported inside the functions: the gateway and the search service
import this package's `shared` modules and must not pay for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import onnxruntime
    import torch

log = logging.getLogger(__name__)

Runtime = Literal["auto", "onnx", "torch"]
RUNTIMES: tuple[str, ...] = ("auto", "onnx", "torch")
# opset of every export: 17 has LayerNormalization, which ORT's BERT fusions read
OPSET = 17


def resolve_runtime(runtime: str, device_type: str) -> str:
    """What runs a model's passes: `auto` = ONNX Runtime on a CPU, torch on a GPU (its fp16
    autocast path); `onnx` on a GPU is refused (the serving GPU path is torch's)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "auto":
        return "onnx" if device_type == "cpu" else "torch"
    if runtime == "onnx" and device_type != "cpu":
        raise ValueError("the onnx runtime serves CPUs; a GPU runs torch (runtime auto|torch)")
    return runtime


def state_digest(module: torch.nn.Module) -> str:
    """A digest of a network's weights and buffers (names, shapes, dtypes, bytes): what an
    export of it is keyed by, so fine-tuned weights (a `sat` checkpoint's CNN) get their own."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        # bytes of any dtype (numpy has no bfloat16): view the storage as raw bytes
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:20]


def export_key(parts: Mapping[str, Any]) -> str:
    """The file-name digest of an export's defining parts."""
    blob = json.dumps(dict(parts), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_export(cache_dir: Path, kind: str, parts: Mapping[str, Any],
                  build: Callable[[Path], None]) -> Path:
    """The ONNX file of `kind` keyed by `parts` under `cache_dir/onnx`; `build(path)` writes it
    when it is missing. One process builds at a time (a file lock: a worker and an encoder
    starting together would otherwise both export); the file appears whole (built under a
    temporary name, then renamed), with a JSON of its parts beside it for people. A cache dir
    that cannot be written (a container image's, baked for other settings) falls back to the
    temporary folder, with a warning."""
    from filelock import FileLock

    folder = Path(cache_dir) / "onnx"
    path = folder / f"{kind}-{export_key(parts)}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as exc:  # a read-only image cache without this export: build it aside
        fallback = Path(tempfile.gettempdir()) / "capsearch-cache"
        if Path(cache_dir) == fallback:
            raise
        log.warning("cannot write %s (%s): exporting %s under %s for this process", folder,
                    exc, kind, fallback)
        return cached_export(fallback, kind, parts, build)
    with lock:
        if path.is_file():  # another process built it while this one waited
            return path
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        start = time.perf_counter()
        try:
            build(tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        path.with_suffix(".json").write_text(json.dumps(dict(parts), indent=1, default=str))
        log.info("exported %s to %s in %.1f s", kind, path, time.perf_counter() - start)
    return path


def make_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session with `threads` intra-op threads that never spin-wait: on cores shared
    with other services a spinning thread burns CPU another process needed (the same lesson
    as torch's OpenMP threads, docs/benchmarks.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def onnx_export(module: torch.nn.Module, args: tuple[Any, ...], path: Path, *,
                input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]]) -> None:
    """`torch.onnx.export` with the settings every export here shares: the exporter that
    traces (`dynamo=False`: no onnxscript needed, shapes from the example, the named axes
    dynamic), opset `OPSET`, constants folded."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices: export-time only
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
