"""One file per trained decoder: weights (float16), vocabulary, config and provenance."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.caption.sat.model import SatConfig, ShowAttendTell
from services.caption.sat.vocab import Vocabulary

FORMAT = "capsearch-sat/1"
_TIED = "out_words.weight"  # the same tensor as embed.weight: stored once


@dataclass
class SatCheckpoint:
    model: ShowAttendTell
    vocab: Vocabulary
    meta: dict[str, Any] = field(default_factory=dict)
    encoder_state: dict[str, torch.Tensor] | None = None  # a fine-tuned CNN, else None

    @property
    def config(self) -> SatConfig:
        return self.model.config


def save_checkpoint(path: Path, checkpoint: SatCheckpoint) -> None:
    """Write atomically (a temp file renamed over the target)."""
    state = {k: v.detach().to("cpu", torch.float16) for k, v in
             checkpoint.model.state_dict().items() if k != _TIED}
    payload: dict[str, Any] = {
        "format": FORMAT,
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    config = SatConfig.from_dict(payload["config"])
    vocab = Vocabulary(payload["vocab"])
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{path}: vocabulary has {len(vocab)} words, config {config.vocab_size}")
    model = ShowAttendTell(config)
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    state[_TIED] = state["embed.weight"]
    model.load_state_dict(state, strict=True)
    encoder = payload.get("encoder_state")
    return SatCheckpoint(model.eval(), vocab, dict(payload.get("meta", {})),
                         {k: v.float() for k, v in encoder.items()} if encoder else None)


def file_digest(path: Path, length: int = 12) -> str:
    """A short content hash, used as a captioner's version."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]
