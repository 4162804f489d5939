"""Choosing the torch device and thread count once per process, the same way in every service.

torch is imported inside the functions that need it: the search service and the gateway use
`cpu_streams` and must not pay torch's import time and memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` = the first CUDA device when there is one, else the CPU; anything else as given."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was asked for but CUDA is not available")
    return device


# CPU passes: `auto` = what each model's retrieval check kept (its module says), `fp32`, or
# `int8` (ONNX Runtime quantisation); torch passes run fp32 on a CPU, fp16 autocast on a GPU
Precision = Literal["auto", "fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")


def set_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (None keeps torch's default: one per core)."""
    import torch

    if threads is not None and threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cpu_streams(streams: int | None = None) -> int:
    """How many single-threaded model passes run in parallel on a CPU: `streams` when set,
    else one per core this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container limited to 4 CPUs on a 64-core node sees 64 cores but may use 4)."""
    if streams is not None and streams > 0:
        return streams
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota is not None else cores)


def model_streams(device: torch.device, streams: int | None = None) -> int:
    """Parallel single-threaded model passes for a device: `cpu_streams` on a CPU, one pass on
    a GPU."""
    return cpu_streams(streams) if device.type == "cpu" else 1


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this process's cgroup may use (quota / period), None when unlimited or unknown;
    cgroup v2 (`cpu.max`) or v1 (`cpu/cpu.cfs_quota_us`)."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100_000)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text().strip())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text().strip())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None
