"""Training the projection head (`services/caption/projection.py`) on cached CNN features.

A two-layer MLP from the head input of a photo (1,600-d) into the text encoder's space, learned
contrastively (InfoNCE, both directions, as CLIP) against the photos' human captions: in each
minibatch every photo, under a random cached view, is paired with a random one of its captions
and must pick it out among the batch's captions (and the caption its photo). Inputs are
standardised (folded into the first layer when the head is saved), dropout and weight decay
regularise; AdamW over all cores, seeded.

Choices are made on held-out photos of the training data (`val`), never on the evaluation
pools: the epoch kept (best R@1 + R@10 of the served vectors), then the fusion weight of the
tag caption and the strength of the hubness correction (a small grid).

Why this replaced the ridge + metric of the 580-photo era: with 13× more photos a contrastive
MLP no longer overfits (docs/quality.md has the measurements), and minibatches keep time and
memory flat in the number of photos (the old metric step built the full captions × photos
matrix at every step, on one thread).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from tqdm import tqdm

from services.caption.captioners.tags import TagsCaptioner
from services.caption.projection import GEM_P, ProjectionHead
from services.caption.training.datasets import CaptionedImages
from services.caption.training.features import FeatureSet
from services.caption.training.progress import progress_bar
from services.caption.training.retrieval_metrics import caption_ranks, summarise
from services.caption.training.text_vectors import cached_text_vectors
from shared.clients import SyncEncoder

log = logging.getLogger(__name__)
Matrix = NDArray[np.float32]


@dataclass(frozen=True)
class ProjectionTrainOptions:
    hidden: int = 1024
    dropout: float = 0.5
    epochs: int = 40  # at most; the best epoch on `val` is kept
    batch_size: int = 256  # photos per step
    lr: float = 1e-3
    weight_decay: float = 0.5
    temperature: float = 0.05
    # chosen on `val` after training (the first of each is used when there is no `val`)
    text_weights: tuple[float, ...] = (0.15, 0.0, 0.1, 0.2, 0.3)
    hub_betas: tuple[float, ...] = (0.5, 0.0, 0.25, 0.75)
    hub_k: int = 10
    bank_size: int = 8000  # training captions kept for the hubness correction
    seed: int = 0


@dataclass(frozen=True)
class TrainingPhotos:
    """What the head learns from: per photo the head input under V views (V, N, F), the
    tag caption's text vector (N, D), and the human captions' vectors with their photo."""

    inputs: NDArray[np.floating]
    tag_vectors: Matrix
    caption_vectors: Matrix
    caption_owner: NDArray[np.int64]

    @property
    def n_photos(self) -> int:
        return int(self.inputs.shape[1])


def photos_for_training(data: CaptionedImages, features: FeatureSet,
                        encoder: SyncEncoder, cache_dir: Path, model: str
                        ) -> TrainingPhotos:
    """Head inputs, tag-caption vectors and caption vectors of one collection (the text
    vectors are cached too)."""
    tags = TagsCaptioner().describe(torch.from_numpy(features.logits[0].astype(np.float32)))
    flat = [c for caps in data.captions for c in caps]
    owner = np.repeat(np.arange(len(data)), [len(c) for c in data.captions])
    return TrainingPhotos(
        inputs=features.pooled,
        tag_vectors=cached_text_vectors(tags, encoder, cache_dir, model=model,
                                        desc=f"tag vectors of {data.name}"),
        caption_vectors=cached_text_vectors(flat, encoder, cache_dir, model=model,
                                            desc=f"caption vectors of {data.name}"),
        caption_owner=owner.astype(np.int64))


def concat_photos(parts: Sequence[TrainingPhotos]) -> TrainingPhotos:
    owners, offset = [], 0
    for p in parts:
        owners.append(p.caption_owner + offset)
        offset += p.n_photos
    return TrainingPhotos(np.concatenate([p.inputs for p in parts], axis=1),
                          np.vstack([p.tag_vectors for p in parts]),
                          np.vstack([p.caption_vectors for p in parts]),
                          np.concatenate(owners))


class _Mlp(torch.nn.Module):
    def __init__(self, mean: Matrix, std: Matrix, hidden: int, out: int, dropout: float):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.hidden = torch.nn.Linear(mean.shape[0], hidden)
        self.out = torch.nn.Linear(hidden, out)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.out(self.drop(torch.relu(self.hidden(self.drop(x)))))

    def folded(self) -> tuple[Matrix, Matrix, Matrix, Matrix]:
        """(W1, b1, W2, b2) with the standardisation folded into the first layer."""
        w1 = self.hidden.weight.detach().T / self.std[:, None]
        b1 = self.hidden.bias.detach() - (self.mean / self.std) @ self.hidden.weight.detach().T
        return (w1.numpy(), b1.numpy(), self.out.weight.detach().T.contiguous().numpy(),
                self.out.bias.detach().numpy())


def _owners_by_photo(owner: NDArray[np.int64], n: int) -> list[NDArray[np.int64]]:
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(n + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n)]


def _head(mlp: _Mlp, image_size: int, text_weight: float, bank: Matrix | None,
          hub_beta: float, hub_k: int, meta: dict[str, object]) -> ProjectionHead:
    w1, b1, w2, b2 = mlp.folded()
    return ProjectionHead(weight=w2, bias=b2, hidden_weight=w1, hidden_bias=b1,
                          image_size=image_size, text_weight=text_weight, bank=bank,
                          hub_beta=hub_beta, hub_k=hub_k, gem_p=GEM_P, meta=meta)


def served_scores(head: ProjectionHead, photos: TrainingPhotos) -> dict[str, float]:
    """R@1/5/10 and median rank of the captions of `photos` against their served vectors
    (view 0, the production view)."""
    image = head.project(np.asarray(photos.inputs[0], np.float32))
    served = head.fuse(photos.tag_vectors, image)
    return summarise(caption_ranks(served, photos.caption_vectors, photos.caption_owner))


def train_projection(photos: TrainingPhotos, *, image_size: int,
                     options: ProjectionTrainOptions = ProjectionTrainOptions(),
                     val: TrainingPhotos | None = None, meta: dict[str, object] | None = None,
                     progress: bool = True) -> ProjectionHead:
    """The head from training photos, its epoch and fusion chosen on `val` (module docstring)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    views, n, _ = photos.inputs.shape
    flat = np.asarray(photos.inputs, np.float32).reshape(views * n, -1)
    mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-4
    del flat
    captions = torch.from_numpy(np.asarray(photos.caption_vectors, np.float32))
    by_photo = _owners_by_photo(photos.caption_owner, n)
    mlp = _Mlp(mean, std, options.hidden, captions.shape[1], options.dropout)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay)
    steps = -(-n // options.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=options.epochs * steps, pct_start=0.1)
    bank_rows = rng.choice(len(captions), size=min(options.bank_size, len(captions)),
                           replace=False)
    bank = np.asarray(photos.caption_vectors[np.sort(bank_rows)], np.float32)
    info = dict(meta or {}, photos=n, views=views, captions=len(captions),
                options=asdict(options))
    history: list[dict[str, object]] = []
    best_state, best_score, best_epoch = None, -1.0, options.epochs
    for epoch in range(1, options.epochs + 1):
        mlp.train()
        order = rng.permutation(n)
        for start in progress_bar(range(0, n, options.batch_size), total=steps, unit="batch",
                          desc=f"head epoch {epoch}/{options.epochs}",
                          disable=not progress):
            rows = order[start:start + options.batch_size]
            view = rng.integers(0, views, size=len(rows))
            x = torch.from_numpy(np.asarray(photos.inputs[view, rows], np.float32))
            picked = [by_photo[r][rng.integers(len(by_photo[r]))] for r in rows]
            image = F.normalize(mlp(x), dim=-1)
            text = captions[picked]
            logits = text @ image.T / options.temperature
            target = torch.arange(len(rows))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if val is None:
            continue
        mlp.eval()
        scores = served_scores(_head(mlp, image_size, options.text_weights[0], bank,
                                     options.hub_betas[0], options.hub_k, {}), val)
        history.append({"epoch": epoch, **scores})
        if progress:
            tqdm.write(f"head epoch {epoch}: {scores}")
        if scores["r1"] + scores["r10"] > best_score:
            best_score, best_epoch = scores["r1"] + scores["r10"], epoch
            best_state = {k: v.clone() for k, v in mlp.state_dict().items()}
    if best_state is not None:
        mlp.load_state_dict(best_state)
    mlp.eval()
    text_weight, hub_beta = options.text_weights[0], options.hub_betas[0]
    if val is not None:
        grid = {(w, b): served_scores(_head(mlp, image_size, w, bank, b, options.hub_k, {}), val)
                for w in options.text_weights for b in options.hub_betas}
        (text_weight, hub_beta), chosen = max(grid.items(),
                                              key=lambda kv: kv[1]["r1"] + kv[1]["r10"])
        info["validation"] = {"epochs": history, "kept_epoch": best_epoch,
                              "fusion_grid": [{"text_weight": w, "hub_beta": b, **s}
                                              for (w, b), s in grid.items()],
                              "chosen": chosen, "photos": val.n_photos}
        log.info("head: epoch %d, text weight %.2f, hub beta %.2f: %s", best_epoch,
                 text_weight, hub_beta, chosen)
    return _head(mlp, image_size, text_weight, bank, hub_beta, options.hub_k, info)
