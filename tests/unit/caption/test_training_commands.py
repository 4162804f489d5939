"""`train-projection`, `train-captioner` and `eval captions` end to end on tiny data made here
(a few real photos in the shared folder format), plus the shipped default models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from capsearch.cli import main
from capsearch.commands.train import split_folder
from services.caption.models import default_model_path
from services.caption.projection import load_head
from services.caption.sat.checkpoint import load_checkpoint
from services.caption.training.caption_metrics import score_captions
from shared.config import get_settings

from .conftest import datasets_dir

CAPTIONS = ["a dog runs on the grass", "a man rides a bike on the road",
            "two children play in the water", "a woman holds a red umbrella",
            "a black dog jumps over a fence", "people walk down a busy street"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = datasets_dir() / "coco-mini-val" / "images"
    if not source.is_dir():
        pytest.skip(f"no photos at {source}")
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "images").mkdir()
    rows = ["image\tcaption"]
    for i, photo in enumerate(sorted(source.glob("*.jpg"))[:6]):
        shutil.copy(photo, folder / "images" / photo.name)
        rows += [f"{photo.name}\t{CAPTIONS[i]}", f"{photo.name}\t{CAPTIONS[(i + 1) % 6]}"]
    (folder / "captions.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_train_projection_writes_a_head_that_maps_into_the_text_space(
        tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "head.pt"
    train, val = split_folder(tiny_folder, tmp_path / "split", held_out=2)
    assert main(["train-projection", "--data", str(train), "--out", str(out),
                 "--val", str(val), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--image-size", "224", "--epochs", "3", "--hidden", "32"]) == 0
    head = load_head(out)
    assert head.image_size == 224 and head.weight.shape == (32, 384)
    assert head.hidden_weight is not None and head.hidden_weight.shape == (1600, 32)
    v = head.fuse(np.ones((2, 384), np.float32), head.project(np.ones((2, 1600))))
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    chosen = head.meta["validation"]
    assert chosen["photos"] == 2 and 1 <= chosen["kept_epoch"] <= 3
    assert len(chosen["fusion_grid"]) > 1  # the fusion weight and hubness were chosen on val
    assert "4 photos" in capsys.readouterr().out


def test_train_transformer_captioner_keeps_the_best_epoch_on_val(
        tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "captioner.pt"
    train, val = split_folder(tiny_folder, tmp_path / "split", held_out=2)
    assert main(["train-captioner", "--data", str(train), "--val", str(val),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--image-size", "224", "--epochs", "2", "--hidden", "32"]) == 0
    decoder = load_checkpoint(out)
    assert decoder.meta["architecture"] == "transformer" and len(decoder.meta["history"]) == 2
    assert all("bleu4" in h for h in decoder.meta["history"])
    assert "BLEU-4" in capsys.readouterr().out


def test_train_sat_captioner_then_eval_captions_json_last_line(
        tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "sat.pt"
    assert main(["train-captioner", "--arch", "sat", "--data", str(tiny_folder),
                 "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--image-size", "224", "--epochs", "2", "--pretrain-epochs", "0",
                 "--batch-size", "4"]) == 0
    sat = load_checkpoint(out)
    assert "dog" in sat.vocab.words and len(sat.meta["history"]) == 2
    # resumable: one more epoch continues from the saved state
    assert main(["train-captioner", "--arch", "sat", "--data", str(tiny_folder),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--image-size", "224", "--epochs", "3", "--pretrain-epochs", "0",
                 "--batch-size", "4", "--resume"]) == 0
    assert len(load_checkpoint(out).meta["history"]) == 3
    capsys.readouterr()
    monkeypatch.setenv("CAPSEARCH_SAT_CHECKPOINT", str(out))
    get_settings.cache_clear()  # the command reads the process-wide settings
    try:
        assert main(["eval", "captions", "--images", str(tiny_folder / "images"),
                     "--captions", str(tiny_folder / "captions.tsv"), "--captioner", "sat",
                     "--json"]) == 0
    finally:
        monkeypatch.delenv("CAPSEARCH_SAT_CHECKPOINT")
        get_settings.cache_clear()
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n"] == 6 and {"bleu1", "bleu2", "bleu3", "bleu4"} <= set(last)
    assert all(0.0 <= last[k] <= 100.0 for k in ("bleu1", "bleu4"))


def test_bleu_is_100_for_an_exact_reference_and_0_for_unrelated_words() -> None:
    assert score_captions(["a dog runs on the grass"],
                          [["a dog runs on the grass"]]).bleu[3] == pytest.approx(100.0)
    assert score_captions(["zebra xylophone quartz"], [["a dog runs"]]).bleu[0] == 0.0


def test_split_folder_is_deterministic_and_disjoint(tiny_folder: Path, tmp_path: Path) -> None:
    train, val = split_folder(tiny_folder, tmp_path / "a", held_out=2)
    again, _ = split_folder(tiny_folder, tmp_path / "b", held_out=2)
    names = {p.name for p in (train / "images").iterdir()}
    held = {p.name for p in (val / "images").iterdir()}
    assert len(held) == 2 and len(names) == 4 and not names & held
    assert names == {p.name for p in (again / "images").iterdir()}
    assert all(line.split("\t")[0] in held
               for line in (val / "captions.tsv").read_text().splitlines()[1:])


def test_the_default_models_ship_with_the_package() -> None:
    head = load_head(default_model_path("projection.pt"))
    assert head.image_size == 256 and head.hidden_weight is not None
    decoder = load_checkpoint(default_model_path("captioner.pt"))
    assert decoder.meta["architecture"] == "transformer" and len(decoder.vocab.words) > 1000
    for model in (head.meta, decoder.meta):  # the held-out pools stay held out
        assert "flickr8k-train-train" in model["trained_on"]
        assert not {"flickr8k-dev", "coco-mini-val"} & set(model["trained_on"])
    sizes = [default_model_path(n).stat().st_size for n in ("projection.pt", "captioner.pt")]
    assert max(sizes) <= 25e6 and sum(sizes) <= 60e6
    assert not default_model_path("sat.pt").exists()  # trained on flickr8k-dev: retired
