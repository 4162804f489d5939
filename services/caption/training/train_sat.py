"""Training the Show, Attend and Tell decoder on cached CNN regions (or through the CNN).

Seeded and resumable: after every epoch the full state (weights, optimiser, random generators)
goes to `<out>.resume`, and the model so far to `<out>`; `resume=True` continues from there.
On a GPU the steps run in mixed precision. Optional language-model pre-training on text-only
captions (paired with the mean training image) comes first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from services.caption.sat.beam import StepDecoder, beam_search
from services.caption.sat.checkpoint import SatCheckpoint, save_checkpoint
from services.caption.sat.model import SatConfig, ShowAttendTell, caption_loss
from services.caption.sat.vocab import Vocabulary
from services.caption.training.caption_metrics import CaptionScores, score_captions
from services.caption.training.progress import progress_bar
from services.caption.training.sat_data import CaptionPairs, pair_batches, text_batches
from shared.devices import resolve_device

log = logging.getLogger(__name__)

# region source: (image rows, view per row) → regions (B, L, F) on the device
Regions = Callable[[np.ndarray, np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class DecoderTrainOptions:
    """What training any caption decoder takes alike: the vocabulary, the loss's smoothing, the
    beam that captions the held-out photos, the seed, and overrides of the model's config."""

    label_smoothing: float = 0.1
    vocab_size: int = 7500
    min_count: int = 3
    beam_width: int = 3
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # the decoder config's overrides


@dataclass(frozen=True)
class SatTrainOptions(DecoderTrainOptions):
    epochs: int = 20
    pretrain_epochs: int = 0  # language-model epochs over the text-only captions
    batch_size: int = 64
    lr: float = 4e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    device: str = "auto"
    amp: bool = True  # mixed precision (CUDA only)


@dataclass
class ValidationSet:
    """Held-out photos for choosing the epoch: their regions (centre view) and captions."""

    regions: torch.Tensor  # (N, L, F)
    captions: Sequence[Sequence[str]]


@dataclass
class _State:
    model: ShowAttendTell
    optimizer: torch.optim.Optimizer
    epoch: int = 0  # epochs done (pre-training ones included)
    best: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def generate(model: StepDecoder, vocab: Vocabulary, regions: torch.Tensor, *,
             beam_width: int = 3, batch_size: int = 64) -> list[str]:
    """Captions of (N, L, F) regions, batched beam search."""
    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, regions.shape[0], batch_size):
        batch = regions[start:start + batch_size].to(device).float()
        out.extend(vocab.decode(s) for s in beam_search(model, batch, beam_width=beam_width))
    return out


def validate(model: StepDecoder, vocab: Vocabulary, val: ValidationSet,
             beam_width: int) -> CaptionScores:
    return score_captions(generate(model, vocab, val.regions, beam_width=beam_width),
                          val.captions)


def train_sat(captions: Sequence[Sequence[str]], regions: Regions, n_views: int,
              mean_regions: torch.Tensor, out: Path, *, options: SatTrainOptions,
              text_only: Sequence[str] = (), val: ValidationSet | None = None,
              resume: bool = False, extra_params: Sequence[torch.nn.Parameter] = (),
              extra_state: Callable[[], dict[str, torch.Tensor]] | None = None,
              meta: dict[str, Any] | None = None, progress: bool = True) -> SatCheckpoint:
    """Train on (image, caption) pairs; `regions` gives the CNN regions of image rows."""
    device = resolve_device(options.device)
    resume_file = out.with_name(out.name + ".resume")
    saved = torch.load(resume_file, map_location="cpu", weights_only=False) if (
        resume and resume_file.is_file()) else None
    if saved is not None:
        vocab = Vocabulary(saved["vocab"])
        config = SatConfig.from_dict(saved["config"])
    else:
        vocab = Vocabulary.build([c for caps in captions for c in caps] + list(text_only),
                                 max_size=options.vocab_size, min_count=options.min_count)
        config = SatConfig(vocab_size=len(vocab), feature_dim=int(mean_regions.shape[-1]),
                           **options.model)
    torch.manual_seed(options.seed)
    model = ShowAttendTell(config).to(device)
    params = list(model.parameters()) + list(extra_params)
    state = _State(model, torch.optim.Adam(params, lr=options.lr,
                                           weight_decay=options.weight_decay))
    rng = np.random.default_rng(options.seed)
    if saved is not None:
        model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.epoch, state.best, state.history = saved["epoch"], saved["best"], saved["history"]
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        log.info("resuming %s after epoch %d", out, state.epoch)
    pairs = CaptionPairs.build(captions, vocab, config.max_words)
    text_tokens = [vocab.encode(t, config.max_words) for t in text_only]
    total = options.pretrain_epochs * bool(text_tokens) + options.epochs
    amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    info = dict(meta or {}, options=asdict(options), pairs=len(pairs), text_only=len(text_only))
    while state.epoch < total:
        pretraining = state.epoch < total - options.epochs
        model.train()
        if pretraining:
            batches: Any = ((r.to(device), t) for r, t in text_batches(
                text_tokens, mean_regions, options.batch_size, rng))
            steps = -(-len(text_tokens) // options.batch_size)
        else:
            batches = ((regions(i, v), t) for i, v, t in pair_batches(
                pairs, n_views, options.batch_size, rng))
            steps = -(-len(pairs) // options.batch_size)
        desc = f"{'LM pre-training' if pretraining else 'training'} epoch {state.epoch + 1}/{total}"
        losses = []
        for feats, tokens in progress_bar(batches, total=steps, desc=desc, unit="batch",
                                  disable=not progress):
            tokens = tokens.to(device)
            autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
            with autocast:
                logits, alphas = model(feats, tokens)
                loss = caption_loss(logits, tokens, alphas, config.alpha_c,
                                    options.label_smoothing)
            state.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(params, options.grad_clip)
            scaler.step(state.optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        state.epoch += 1
        record: dict[str, Any] = {"epoch": state.epoch, "pretraining": pretraining,
                                  "loss": round(float(np.mean(losses)), 4)}
        improved = not pretraining and val is None
        if val is not None and not pretraining:
            scores = validate(model, vocab, val, options.beam_width)
            record.update(scores.as_dict())
            improved = scores.bleu[3] > state.best
            state.best = max(state.best, scores.bleu[3])
        state.history.append(record)
        log.info("epoch %s", record)
        if progress:
            tqdm.write(f"epoch {state.epoch}: {record}")
        if improved:
            checkpoint = SatCheckpoint(model, vocab, dict(info, history=state.history),
                                       extra_state() if extra_state else None)
            save_checkpoint(out, checkpoint)
        _save_resume(resume_file, state, vocab, config, rng)
    from services.caption.sat.checkpoint import load_checkpoint

    return load_checkpoint(out)


def _save_resume(path: Path, state: _State, vocab: Vocabulary, config: SatConfig,
                 rng: np.random.Generator) -> None:
    payload = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
               "epoch": state.epoch, "best": state.best, "history": state.history,
               "vocab": vocab.words, "config": config.to_dict(),
               "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def with_model_overrides(options: SatTrainOptions, **model: Any) -> SatTrainOptions:
    return replace(options, model={**options.model, **model})
