"""What machine a figure was measured on: CPU model, the SIMD flags that change model speed,
usable cores and the load at the time (the project's machines are shared)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from shared.devices import cpu_streams

# flags that decide which kernels ONNX Runtime, oneDNN and numpy pick
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
              "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """CPU model, its SIMD flags among `SIMD_FLAGS`, usable cores and the 1-min load."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "flags": [f for f in SIMD_FLAGS if f in flags],
            "cores": cpu_streams(), "load_1m": round(load, 2) if load is not None else None}


def describe() -> str:
    """One line for a figure's heading: `CPU model (flags), N cores, load L`."""
    info = cpu_info()
    flags = " ".join(info["flags"]) or "no listed SIMD flags"  # type: ignore[arg-type]
    return f"{info['cpu']} ({flags}), {info['cores']} usable cores, load {info['load_1m']}"
