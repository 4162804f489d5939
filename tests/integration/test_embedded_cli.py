"""The embedded mode through the real `capsearch` command, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capsearch.files import read_captions

pytestmark = pytest.mark.integration


def run_cli(*args: str, tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update({"CAPSEARCH_DATA_DIR": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "CAPSEARCH_DATASETS_DIR": str(tmp_path / "no-datasets-here")})
    return subprocess.run([sys.executable, "-m", "capsearch", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_demo_indexes_bundled_sample_photos_and_answers_queries(tmp_path: Path) -> None:
    proc = run_cli("demo", "-q", "a cat", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sample photos bundled" in proc.stdout
    assert "0 failed" in proc.stdout
    after_query = proc.stdout.split("query: 'a cat'")[1]
    assert "chelsea.png" in after_query.splitlines()[1]  # skimage's cat photo ranks first


def test_eval_retrieval_prints_metrics_as_a_json_last_line(tmp_path: Path, data_root: Path
                                                           ) -> None:
    src = data_root / "coco-mini-val"
    captions = read_captions(src / "captions.tsv")
    images = tmp_path / "pool" / "images"
    images.mkdir(parents=True)
    names = sorted(captions)[:25]
    for name in names:
        (images / name).symlink_to(src / "images" / name)
    tsv = tmp_path / "pool" / "captions.tsv"
    tsv.write_text("image\tcaption\n" + "".join(
        f"{n}\t{c}\n" for n in names for c in captions[n]))
    proc = run_cli("eval", "retrieval", "--images", str(images), "--captions", str(tsv),
                   "--json", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"pool", "queries", "r1", "r5", "r10", "median_rank"}
    assert metrics["pool"] == 25
    assert metrics["queries"] == sum(len(captions[n]) for n in names)
    assert metrics["r1"] <= metrics["r5"] <= metrics["r10"] <= 100
    assert metrics["r10"] > 40  # chance is 40% for top-10 of 25
