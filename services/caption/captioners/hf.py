"""`hf`: any transformers image-to-text model directory (BLIP, GIT, ViT-GPT2, …), batched.

For users who have such weights: `CAPSEARCH_HF_MODEL_DIR` points at a directory saved with
`save_pretrained` (model + processor or image processor + tokenizer). It is loaded from local
files only, with `AutoModelForImageTextToText` (which covers vision-encoder-decoder, BLIP,
BLIP-2 and GIT) and captions are generated with beam search. This captioner runs its own
network, so an image vector (the `image`/`fused` representations) costs a second CNN pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from services.caption.captioners.base import Captioner, register_captioner
from shared.config import Settings
from shared.devices import resolve_device

log = logging.getLogger(__name__)


@register_captioner("hf")
class HfCaptioner(Captioner):
    """Captions from a transformers image-to-text model directory."""

    def __init__(self, model_dir: Path | str | None, *, batch_size: int = 16,
                 max_new_tokens: int = 30, num_beams: int = 3, device: str = "auto") -> None:
        super().__init__(batch_size=batch_size)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.device = resolve_device(device)
        self.version = f"hf/{self.model_dir.name if self.model_dir else 'unset'}"
        self._model: Any = None
        self._images: Any = None  # the image processor
        self._tokenizer: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HfCaptioner:
        return cls(settings.hf_model_dir, batch_size=settings.caption_batch_size,
                   max_new_tokens=settings.hf_max_new_tokens, num_beams=settings.hf_num_beams,
                   device=settings.device)

    def _load(self) -> None:
        if self.model_dir is None or not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError("the hf captioner needs CAPSEARCH_HF_MODEL_DIR: a "
                                    "transformers image-to-text model directory (config.json), "
                                    f"got {self.model_dir}")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local directory never needs the hub
        from transformers import AutoModelForImageTextToText

        self._images, self._tokenizer = _processors(self.model_dir)
        model = AutoModelForImageTextToText.from_pretrained(self.model_dir, local_files_only=True)
        self._model = model.to(self.device).eval()
        self.version = f"hf/{self.model_dir.name}/{type(model).__name__}"

    def _close(self) -> None:
        self._model = self._images = self._tokenizer = None

    def _caption(self, batch: list[Image.Image]) -> list[str]:
        inputs = self._images(images=[img.convert("RGB") for img in batch], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device)
        with torch.inference_mode():
            ids = self._model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens,
                                       num_beams=self.num_beams)
        texts = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(t.split()) or "a photo" for t in texts]


def _processors(model_dir: Path) -> tuple[Any, Any]:
    """(image processor, tokenizer): from a combined processor (BLIP, GIT) when the directory
    has one, else the image processor and the tokenizer saved beside the model."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor: Any = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        processor = None
    images = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if images is None:
        images = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return images, tokenizer
