"""What every bench prints beside its figures: the CPU model, the flags that decide which
kernels run (AVX2, AVX-512, VNNI, bf16, AMX), the usable cores and the load at that moment
(the project's machines are shared); and, with `--json`, the figures as one JSON line."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

# the flags of /proc/cpuinfo that change which inference kernels a CPU runs (ONNX Runtime,
# oneDNN, numpy)
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def describe_machine() -> dict[str, object]:
    """{"cpu", "flags", "cores", "load"}: the model name, which of `KERNEL_FLAGS` it has, the
    cores this process may use, and the 1/5/15-minute load averages."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(),
                                                         platform.processor()):
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        cores, load = os.cpu_count() or 1, []
    return {"cpu": model, "flags": [f for f in KERNEL_FLAGS if f in flags], "cores": cores,
            "load": load}


def machine_line() -> str:
    """One line for a bench's stderr."""
    m = describe_machine()
    return (f"# machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or '-'}"
            f", load {m['load']}")


def describe() -> str:
    """A few words for a figure's heading: `CPU model (flags), N usable cores, load L`."""
    m = describe_machine()
    flags = " ".join(m["flags"]) or "no listed SIMD flags"  # type: ignore[arg-type]
    load = m["load"][0] if m["load"] else None  # type: ignore[index]
    return f"{m['cpu']} ({flags}), {m['cores']} usable cores, load {load}"


def print_figures(figures: Mapping[str, object], as_json: bool) -> None:
    """With `--json`, the figures as one JSON line, after the readable ones (docs/ tables are
    made from it)."""
    if as_json:
        print(json.dumps(figures))
