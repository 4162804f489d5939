"""Choosing the torch device and thread count once per process, the same way in every service."""

from __future__ import annotations

import os

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` = the first CUDA device when there is one, else the CPU; anything else as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was asked for but CUDA is not available")
    return device


def set_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (None keeps torch's default: one per core)."""
    if threads is not None and threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cpu_streams(streams: int | None = None) -> int:
    """How many single-threaded model passes run in parallel on a CPU: `streams` when set,
    else one per core this process may use."""
    if streams is not None and streams > 0:
        return streams
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
