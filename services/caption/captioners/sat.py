"""The trained decoders over the shared EfficientNet-Lite pass, beam search, batched.

`transformer` (the default captioner): the transformer decoder whose checkpoint ships in
`services/caption/models/` (`settings.transformer_checkpoint` to use another); `sat`: Show,
Attend and Tell (`settings.sat_checkpoint`; none ships: train one with
`capsearch train-captioner --arch sat`). A checkpoint is one file with weights, vocabulary
and config, written by `capsearch train-captioner`. A checkpoint trained with a fine-tuned
CNN carries that CNN's weights; the captioner then runs its own backbone instead of the
shared one. Both use the beam settings `sat_beam_width` and `sat_length_penalty`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from services.caption.captioners.backbone import (
    BackboneOutput,
    EfficientNetBackbone,
    backbone_options,
    shared_backbone,
)
from services.caption.captioners.base import register_captioner
from services.caption.captioners.on_backbone import BackboneCaptioner
from services.caption.models import default_model_path
from services.caption.sat.beam import beam_search
from services.caption.sat.checkpoint import SatCheckpoint, file_digest, load_checkpoint
from shared.config import Settings
from shared.devices import set_torch_threads


@register_captioner("sat")
class SatCaptioner(BackboneCaptioner):
    """Captions generated word by word by the trained attention decoder."""

    default_checkpoint = "sat.pt"

    def __init__(self, checkpoint: Path | str | None = None, *, batch_size: int = 16,
                 beam_width: int = 3, length_penalty: float = 0.0,
                 backbone: EfficientNetBackbone | None = None,
                 **options: Any) -> None:
        super().__init__(batch_size=batch_size)
        self.checkpoint_path = (Path(checkpoint) if checkpoint is not None
                                else default_model_path(self.default_checkpoint))
        self.beam_width = beam_width
        self.length_penalty = length_penalty
        self.backbone = (backbone if backbone is not None
                         else shared_backbone(**options))
        self.version = f"{self.name}/unloaded"
        self._sat: SatCheckpoint | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SatCaptioner:
        return cls(settings.sat_checkpoint, batch_size=settings.caption_batch_size,
                   beam_width=settings.sat_beam_width,
                   length_penalty=settings.sat_length_penalty, **backbone_options(settings))

    def _load(self) -> None:
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"no {self.name} checkpoint at {self.checkpoint_path}; "
                                    "build the default models with `capsearch build-models` "
                                    f"or train one: `capsearch train-captioner --arch "
                                    f"{self.name}`")
        sat = load_checkpoint(self.checkpoint_path, map_location="cpu")
        if sat.encoder_state is not None:  # its own fine-tuned CNN
            shared = self.backbone
            backbone = EfficientNetBackbone(shared.weights_path, model=shared.variant_key,
                                            device=str(shared.device),
                                            image_size=shared.image_size,
                                            short_side=shared.short_side, resize=shared.resize,
                                            streams=shared.streams, runtime=shared.runtime,
                                            precision=shared.precision,
                                            cache_dir=shared.cache_dir,
                                            calibration_dir=shared.calibration_dir)
            backbone.load()
            backbone.module.load_state_dict(sat.encoder_state)
            self.backbone = backbone
        self.backbone.load()
        if self.backbone.device.type == "cpu" and self.backbone.streams > 1:
            # the decoder runs in the CNN's parallel streams: one torch thread each (torch's
            # thread count is per process; nothing else in the worker uses torch on a CPU)
            set_torch_threads(1)
        sat.model.to(self.backbone.device)
        self._sat = sat
        self.version = (f"{self.name}/{file_digest(self.checkpoint_path)}"
                        f"/beam{self.beam_width}")

    def describe_output(self, out: BackboneOutput) -> list[str]:
        assert self._sat is not None, "load() first"
        model = self._sat.model

        def decode(regions: torch.Tensor) -> list[list[int]]:  # (b, G·G, 1280)
            with torch.inference_mode():
                return beam_search(model, regions, beam_width=self.beam_width,
                                   length_penalty=self.length_penalty)

        # on a CPU, one part of the batch per stream, in parallel, as the CNN pass
        parts = self.backbone.map_streams(decode, out.regions())
        return [self._sat.vocab.decode(seq) or "a photo" for part in parts for seq in part]


@register_captioner("transformer")
class TransformerCaptioner(SatCaptioner):
    """Captions from the transformer decoder (`services/caption/sat/transformer.py`)."""

    default_checkpoint = "captioner.pt"

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformerCaptioner:
        return cls(settings.transformer_checkpoint, batch_size=settings.caption_batch_size,
                   beam_width=settings.sat_beam_width,
                   length_penalty=settings.sat_length_penalty, **backbone_options(settings))
