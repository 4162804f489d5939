"""How many parallel CPU streams the model passes get: affinity, capped by a cgroup quota."""

from __future__ import annotations

from pathlib import Path

import pytest

import shared.devices as devices
from shared.devices import cgroup_cpu_quota, cpu_streams


def test_cgroup_v2_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_no_or_garbled_cgroup_files_mean_unknown(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("lots\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_streams_follow_the_quota_below_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: 2.5)
    assert cpu_streams() == 3  # a partial CPU still gets a stream
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: None)
    assert cpu_streams() == 64
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: 0.2)
    assert cpu_streams() == 1
    assert cpu_streams(5) == 5  # the setting wins
