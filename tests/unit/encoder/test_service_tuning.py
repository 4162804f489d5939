"""How the encoder service sets its threads and precision."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.encoder.app import service_threads
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


def test_precisions_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAPSEARCH_ENCODER_PRECISION", "CAPSEARCH_BACKBONE_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    assert (Settings().encoder_precision, Settings().backbone_precision) == ("auto", "auto")
    monkeypatch.setenv("CAPSEARCH_ENCODER_PRECISION", " FP32 ")
    monkeypatch.setenv("CAPSEARCH_BACKBONE_PRECISION", "int8")
    assert (Settings().encoder_precision, Settings().backbone_precision) == ("fp32", "int8")
    monkeypatch.setenv("CAPSEARCH_BACKBONE_PRECISION", "bf16")  # the private-op path is gone
    with pytest.raises(ValidationError, match="backbone_precision"):
        Settings()
    monkeypatch.setenv("CAPSEARCH_BACKBONE_PRECISION", "auto")
    monkeypatch.setenv("CAPSEARCH_ENCODER_PRECISION", "fp8")
    with pytest.raises(ValidationError, match="encoder_precision"):
        Settings()


def test_runtimes_and_backbone_choices_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.encoder_runtime, settings.backbone_runtime) == ("auto", "auto")
    assert (settings.backbone_model, settings.backbone_resize,
            settings.backbone_image_size) == ("lite0", "crop", 256)
    monkeypatch.setenv("CAPSEARCH_ENCODER_RUNTIME", "Torch")
    monkeypatch.setenv("CAPSEARCH_BACKBONE_MODEL", "lite2")
    monkeypatch.setenv("CAPSEARCH_BACKBONE_RESIZE", "squash")
    settings = Settings()
    assert (settings.encoder_runtime, settings.backbone_model,
            settings.backbone_resize) == ("torch", "lite2", "squash")
    monkeypatch.setenv("CAPSEARCH_BACKBONE_MODEL", "lite7")
    with pytest.raises(ValidationError, match="backbone_model"):
        Settings()
