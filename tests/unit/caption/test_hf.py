"""The `hf` captioner with a tiny randomly initialised transformers model built here (no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from services.caption.captioners import build_captioner
from services.caption.captioners.hf import HfCaptioner
from shared.config import Settings


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ViT encoder + BERT decoder (2 tiny layers), MiniLM's tokenizer, a PIL image processor."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )
    from transformers.models.vit import ViTImageProcessorPil

    from services.encoder.encoder import default_model_dir

    folder = tmp_path_factory.mktemp("tiny-vit-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True)
    encoder = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, image_size=32, patch_size=8)
    decoder = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=37, is_decoder=True,
                         add_cross_attention=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.sep_token_id
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_hf_captioner_captions_a_batch_with_a_tiny_local_model(tiny_model_dir: Path) -> None:
    captioner = HfCaptioner(tiny_model_dir, batch_size=2, max_new_tokens=5, num_beams=2,
                            device="cpu")
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (40, 40), (0, 90, 0)),
              Image.new("L", (50, 70), 128)]
    captions = captioner.caption(images)
    assert len(captions) == 3
    assert all(isinstance(c, str) and c for c in captions)
    assert "VisionEncoderDecoderModel" in captioner.version


def test_hf_captioner_is_built_from_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, captioner="hf", hf_model_dir=tiny_model_dir,
                        hf_max_new_tokens=4, hf_num_beams=1, device="cpu")
    captioner = build_captioner("hf", settings)
    assert isinstance(captioner, HfCaptioner)
    assert captioner.max_new_tokens == 4
    assert len(captioner.caption([Image.new("RGB", (32, 32))])) == 1


def test_hf_captioner_without_a_model_dir_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CAPSEARCH_HF_MODEL_DIR"):
        HfCaptioner(tmp_path, device="cpu").load()
