"""Training the transformer caption decoder (`services/caption/sat/transformer.py`) on cached
CNN region grids.

A batch is a group of photos with all of their captions (5 per Flickr8k photo): the regions of a
photo go through the decoder's region layers once and serve its five captions, each photo under
a random one of its cached views (the photo and its mirror image). AdamW with a one-cycle
learning rate, label smoothing, dropout; after every epoch the held-out photos are captioned by
beam search and the epoch with the best BLEU-4 is the one kept. Seeded: the same data and
options give the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from services.caption.sat.checkpoint import SatCheckpoint, load_checkpoint, save_checkpoint
from services.caption.sat.transformer import (
    CaptionTransformer,
    DecoderConfig,
    caption_loss,
    parameter_groups,
)
from services.caption.sat.vocab import Vocabulary
from services.caption.training.progress import progress_bar
from services.caption.training.sat_data import pad_tokens
from services.caption.training.train_sat import DecoderTrainOptions, ValidationSet, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransformerTrainOptions(DecoderTrainOptions):
    epochs: int = 10
    photos_per_batch: int = 16
    lr: float = 6e-4
    weight_decay: float = 0.05
    warmup: float = 0.1  # share of the steps spent warming the learning rate up
    grad_clip: float = 1.0


def photo_batches(n_photos: int, size: int, rng: np.random.Generator
                  ) -> list[NDArray[np.int64]]:
    order = rng.permutation(n_photos)
    return [order[i:i + size] for i in range(0, n_photos, size)]


def train_transformer(captions: Sequence[Sequence[str]], maps: NDArray[np.floating], out: Path,
                      *, options: TransformerTrainOptions = TransformerTrainOptions(),
                      val: ValidationSet | None = None, meta: dict[str, Any] | None = None,
                      progress: bool = True) -> SatCheckpoint:
    """Train on photos' region grids `maps` (V views, N photos, L regions, F) and their
    captions; write the kept epoch to `out` and return it."""
    views, n, regions, feature_dim = maps.shape
    if n != len(captions):
        raise ValueError(f"{n} photos of features but {len(captions)} of captions")
    vocab = Vocabulary.build([c for caps in captions for c in caps],
                             max_size=options.vocab_size, min_count=options.min_count)
    config = DecoderConfig(vocab_size=len(vocab), regions=regions, feature_dim=feature_dim,
                           **options.model)
    encoded = [[ids for ids in (vocab.encode(c, config.max_words) for c in caps) if len(ids) > 2]
               for caps in captions]
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    model = CaptionTransformer(config)
    optimizer = torch.optim.AdamW(parameter_groups(model, options.weight_decay), lr=options.lr)
    steps = -(-n // options.photos_per_batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=options.epochs * steps,
        pct_start=options.warmup, anneal_strategy="cos")
    info = dict(meta or {}, options=asdict(options), photos=n,
                captions=sum(len(c) for c in encoded), architecture="transformer")
    history: list[dict[str, Any]] = []
    best = -1.0
    for epoch in range(1, options.epochs + 1):
        model.train()
        losses = []
        for rows in progress_bar(photo_batches(n, options.photos_per_batch, rng), total=steps,
                         desc=f"training epoch {epoch}/{options.epochs}", unit="batch",
                         disable=not progress):
            view = rng.integers(0, views, size=len(rows))
            features = torch.from_numpy(np.asarray(maps[view, rows], np.float32))
            owner = [i for i, r in enumerate(rows) for _ in encoded[r]]
            tokens = pad_tokens([ids for r in rows for ids in encoded[r]])
            logits = model(features, tokens, torch.tensor(owner, dtype=torch.long))
            loss = caption_loss(logits, tokens, options.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        record: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4)}
        improved = val is None
        if val is not None:
            scores = validate(model, vocab, val, options.beam_width)
            record.update(scores.as_dict())
            improved = scores.bleu[3] > best
            best = max(best, scores.bleu[3])
        history.append(record)
        log.info("epoch %s", record)
        if progress:
            tqdm.write(f"epoch {epoch}: {record}")
        if improved:
            save_checkpoint(out, SatCheckpoint(model, vocab, dict(info, history=history)))
    final = load_checkpoint(out)
    final.meta["history"] = history  # every epoch, also those after the kept one
    save_checkpoint(out, final)
    return final
