"""How the encoder service sets its threads and precision."""

from __future__ import annotations

import pytest

from services.encoder.app import PRECISION_ENV, service_precision, service_threads
from shared.config import Settings


def test_threads_follow_the_setting_else_half_the_usable_cores(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    import shared.devices as devices

    assert service_threads(Settings(torch_threads=3)) == 3
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert service_threads(Settings()) == 1  # leaves a core to the gateway and search
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert service_threads(Settings()) == 8
    # a pod limited to 2 CPUs on a 64-core node: 1 thread, not 32
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: 2.0)
    assert service_threads(Settings()) == 1


def test_precision_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert service_precision() == "auto"
    monkeypatch.setenv(PRECISION_ENV, " FP32 ")
    assert service_precision() == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        service_precision()
