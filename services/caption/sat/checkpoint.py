"""One file per trained decoder: weights (float16), vocabulary, config and provenance.

Two architectures share the format, told apart by its `format` tag: the Show, Attend and Tell
LSTM (`model.py`) and the transformer decoder (`transformer.py`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.caption.sat.model import SatConfig, ShowAttendTell
from services.caption.sat.transformer import CaptionTransformer, DecoderConfig
from services.caption.sat.vocab import Vocabulary

Decoder = ShowAttendTell | CaptionTransformer
FORMATS: dict[str, tuple[type[SatConfig] | type[DecoderConfig], type[Decoder]]] = {
    "capsearch-sat/1": (SatConfig, ShowAttendTell),
    "capsearch-transformer/1": (DecoderConfig, CaptionTransformer),
}
_TIED = "out_words.weight"  # the sat decoder's copy of embed.weight: stored once


def format_of(model: Decoder) -> str:
    return next(tag for tag, (_, cls) in FORMATS.items() if isinstance(model, cls))


@dataclass
class SatCheckpoint:
    """A trained decoder of either architecture, its vocabulary and metadata."""

    model: Decoder
    vocab: Vocabulary
    meta: dict[str, Any] = field(default_factory=dict)
    encoder_state: dict[str, torch.Tensor] | None = None  # a fine-tuned CNN, else None

    @property
    def config(self) -> SatConfig | DecoderConfig:
        return self.model.config


def save_checkpoint(path: Path, checkpoint: SatCheckpoint) -> None:
    """Write atomically (a temp file renamed over the target)."""
    state = {k: v.detach().to("cpu", torch.float16) for k, v in
             checkpoint.model.state_dict().items() if k != _TIED}
    payload: dict[str, Any] = {
        "format": format_of(checkpoint.model),
        "config": checkpoint.config.to_dict(),
        "vocab": list(checkpoint.vocab.words),
        "state_dict": state,
        "meta": dict(checkpoint.meta),
    }
    if checkpoint.encoder_state is not None:
        payload["encoder_state"] = {k: v.detach().to("cpu", torch.float16)
                                    for k, v in checkpoint.encoder_state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> SatCheckpoint:
    """The decoder in eval mode (float32), its vocabulary and metadata."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    tag = payload.get("format") if isinstance(payload, dict) else None
    if tag not in FORMATS:
        raise ValueError(f"{path} is not a caption decoder checkpoint "
                         f"({', '.join(FORMATS)})")
    config_cls, model_cls = FORMATS[tag]
    config = config_cls.from_dict(payload["config"])
    vocab = Vocabulary(payload["vocab"])
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{path}: vocabulary has {len(vocab)} words, config {config.vocab_size}")
    model = model_cls(config)  # type: ignore[arg-type]
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    if isinstance(model, ShowAttendTell):
        state[_TIED] = state["embed.weight"]
    model.load_state_dict(state, strict=True)
    encoder = payload.get("encoder_state")
    return SatCheckpoint(model.eval(), vocab, dict(payload.get("meta", {})),
                         {k: v.float() for k, v in encoder.items()} if encoder else None)


def file_digest(path: Path, length: int = 12) -> str:
    """A short content hash, used as a captioner's version."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]
