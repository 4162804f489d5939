"""The EfficientNet-Lite0 backbone: preprocessing that reproduces ImageNet results."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from services.caption.captioners.backbone import (
    CROP_SIZE,
    EfficientNetBackbone,
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


def test_cpu_streams_and_the_frozen_copy_give_the_eager_pass(backbone: EfficientNetBackbone
                                                              ) -> None:
    """A batch split into chunks over parallel streams through the frozen TorchScript copy is
    the same as one eager pass over the whole batch (order kept, batch norms folded)."""
    streamed = EfficientNetBackbone(image_size=CROP_SIZE, streams=2, device="cpu")
    eager = EfficientNetBackbone(image_size=CROP_SIZE, streams=1, jit=False, device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (200 + 10 * i, 260, 3), dtype=np.uint8))
              for i in range(11)]  # 11: chunks of 4, 4 and 3
    try:
        fast, slow = streamed.forward(images), eager.forward(images)
        assert isinstance(streamed._net, torch.jit.ScriptModule) and streamed.streams == 2
        for name in ("features", "logits", "bottleneck"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), name
        # the network's weights changed (a fine-tuned checkpoint): the frozen copy follows
        with torch.no_grad():
            streamed.module._fc.bias.add_(1.0)
        shifted = streamed.forward(images[:2]).logits
        assert torch.allclose(shifted, slow.logits[:2] + 1.0, atol=2e-3, rtol=1e-3)
    finally:
        streamed.close()
        eager.close()


def test_bf16_pass_stays_close_to_fp32_and_answers_float32(backbone: EfficientNetBackbone
                                                           ) -> None:
    """`precision="bf16"`: a bf16 copy of the (batch-norm folded) weights runs the pass; the
    outputs are float32, the pooled features within 1 % of fp32's direction, the ImageNet
    top-1 label the same on real photos, and `module` still hands out the fp32 network."""
    folder = datasets_dir() / "imagenet-samples" / "images"
    if not folder.is_dir():
        pytest.skip(f"no ImageNet samples at {folder}")
    images = [decode_rgb(p.read_bytes()) for p in sorted(folder.iterdir())[:12]]
    half = EfficientNetBackbone(image_size=CROP_SIZE, streams=2, device="cpu", precision="bf16")
    try:
        ref, out = backbone.forward(images), half.forward(images)
        assert half.precision == "bf16"
        assert isinstance(half._net, torch.jit.ScriptModule)
        for name in ("features", "logits", "bottleneck"):
            assert getattr(out, name).dtype == torch.float32, name
        pooled = torch.nn.functional.cosine_similarity(ref.gem(), out.gem())
        assert pooled.min() > 0.99, pooled
        assert (ref.logits.argmax(1) == out.logits.argmax(1)).float().mean() >= 11 / 12
        assert next(half.module.parameters()).dtype == torch.float32
    finally:
        half.close()


def test_auto_precision_is_bf16_only_on_a_cpu_that_runs_it_natively() -> None:
    from shared.devices import cpu_has_native_bf16

    auto = EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", precision="auto")
    assert auto.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert EfficientNetBackbone(image_size=CROP_SIZE, device="cpu").precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        EfficientNetBackbone(image_size=CROP_SIZE, device="cpu", precision="int8")
