"""The README's path on a machine with no database or broker: `capsearch stack up --with-deps`,
then keys, ingest, search, doctor with only CAPSEARCH_DATA_DIR set, then `stack down`, which
stops everything it started and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capsearch.deps.processes import free_port, is_running, record, stop_process
from capsearch.files import bundled_sample_photos
from shared.stackstate import ProcessRecord, read_deps, read_stack

pytestmark = pytest.mark.integration


def capsearch(*args: str, env: dict[str, str], timeout: float = 600
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capsearch", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def recorded_processes(data_dir: Path) -> dict[str, ProcessRecord]:
    stack, deps = read_stack(data_dir), read_deps(data_dir)
    assert stack is not None and deps is not None
    procs = dict(stack.services)
    for name in ("postgres", "redis", "s3"):
        dep = getattr(deps, name)
        assert dep is not None and dep.process is not None, name
        procs[name] = dep.process
    return procs


def test_stack_with_deps_from_up_to_down(tmp_path: Path) -> None:
    data_dir, photos = tmp_path / "home", tmp_path / "photos"
    photos.mkdir()
    for photo in bundled_sample_photos():
        if photo.name in ("chelsea.png", "coffee.png", "rocket.jpg"):
            shutil.copy(photo, photos / photo.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "CAPSEARCH_TORCH_THREADS": "1"})
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"],
                                 start_new_session=True)
    bystander_rec = record(bystander.pid, tmp_path / "none")
    port = free_port()
    up = capsearch("stack", "up", "--with-deps", "--data-dir", str(data_dir), "--port",
                   str(port), env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        assert f"gateway http://127.0.0.1:{port}" in up.stdout
        procs = recorded_processes(data_dir)
        assert set(procs) == {"encoder", "search", "gateway", "caption", "postgres", "redis",
                              "s3"}
        assert all(is_running(rec) for rec in procs.values())

        user = {**env, "CAPSEARCH_DATA_DIR": str(data_dir)}  # nothing else
        key = capsearch("keys", "create", "--scope", "admin", env=user)
        assert key.returncode == 0, key.stderr
        user["CAPSEARCH_API_KEY"] = key.stdout.strip()
        ingest = capsearch("ingest", str(photos), env=user)
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        assert "3 indexed, 0 failed" in ingest.stdout
        search = capsearch("search", "a cat", "-k", "3", "--json", env=user)
        assert search.returncode == 0, search.stderr
        assert json.loads(search.stdout)["results"][0]["filename"] == "chelsea.png"
        doctor = capsearch("doctor", "--json", env=user)
        assert doctor.returncode == 0, doctor.stderr
        assert all(c["found"] == 0 for c in json.loads(doctor.stdout).values())
        assert capsearch("db", "check", env=user).returncode == 0
    finally:
        down = capsearch("stack", "down", "--data-dir", str(data_dir), env=env)
    try:
        assert down.returncode == 0, down.stderr
        assert not [name for name, rec in procs.items() if is_running(rec)]
        assert is_running(bystander_rec)
        assert read_stack(data_dir) is None
    finally:
        stop_process(bystander_rec)
