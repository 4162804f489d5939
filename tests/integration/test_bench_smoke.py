"""The benchmarks run at a tiny size and print their JSON line (figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str, timeout: float = 600) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if "CAPSEARCH_DATASETS_DIR" in os.environ:
        env["CAPSEARCH_DATASETS_DIR"] = os.environ["CAPSEARCH_DATASETS_DIR"]
    proc = subprocess.run([sys.executable, *args, "--json"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_ingest_bench_reports_throughput_and_stages(tmp_path: Path, data_root: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))[:8]:
        (images / src.name).symlink_to(src)
    result = run_bench("bench/ingest_bench.py", "--images", str(images))
    assert set(result) == {"images", "seconds", "img_per_s", "peak_rss_mb", "stages", "machine",
                           "cpu_s"}
    machine = result["machine"]
    assert isinstance(machine, dict) and machine["cpu"] and isinstance(machine["flags"], list)
    assert result["images"] == 8
    stages = result["stages"]
    assert isinstance(stages, dict) and stages["caption"] > 0 and stages["encode"] > 0


def test_query_bench_reports_latency_percentiles(data_root: Path) -> None:
    result = run_bench("bench/query_bench.py", "--n", "500", "--base", "50",
                       "--queries", "40", "--concurrency", "4")
    assert set(result) == {"n", "concurrency", "p50_ms", "p95_ms", "p99_ms", "qps", "errors",
                           "machine"}
    assert result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]


def test_search_under_ingest_reports_idle_and_busy_latency(tmp_path: Path,
                                                           data_root: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))[:8]:
        (images / src.name).symlink_to(src)
    result = run_bench("bench/search_under_ingest.py", "--images", str(images),
                       "--queries", "6", "--think-ms", "10")
    assert {"idle_p50_ms", "busy_p50_ms", "busy_p99_ms", "ratio_p50", "img_per_s"} <= set(result)
    assert result["images"] == 8 and result["busy_searches"] >= 1
    assert 0 < result["idle_p50_ms"] and 0 < result["busy_p50_ms"] <= result["busy_p99_ms"]
    assert result["img_per_s"] > 0
