"""Training the projection head (`services/caption/projection.py`) on cached CNN features.

1. Ridge regression from the head input of every cached view of every photo (cheap
   augmentation) onto the normalised mean text vector of the photo's human captions.
2. Cross-fitting: the same ridge on k−1 folds of the photos predicts the k-th, so every
   training photo gets a prediction made without it — what the head will produce for new
   photos. Fused with the photos' tag-caption vectors, these held-out-like vectors train the
   384×384 metric M with InfoNCE against the human captions (weight decay towards the
   identity); trained on the in-sample predictions instead, M would learn to trust them.
3. The training captions' vectors are kept as the bank of the hubness correction.

Why not a contrastive head straight on the CNN features: with ~600 photos and 1,600 inputs it
separates the training set within a few steps and only gets worse on held-out photos, even
started from the ridge solution; the ridge's shrinkage is what generalises here
(bench/quality_cv.py, docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from services.caption.captioners.tags import TagsCaptioner
from services.caption.projection import GEM_P, ProjectionHead
from services.caption.training.datasets import CaptionedImages
from services.caption.training.features import FeatureSet
from services.caption.training.text_vectors import cached_text_vectors
from shared.clients import SyncEncoder
from shared.vectors import l2_normalize

Matrix = NDArray[np.float32]


@dataclass(frozen=True)
class ProjectionTrainOptions:
    alpha: float = 1000.0  # ridge penalty per view
    text_weight: float = 0.35  # the tag caption's weight in the fused vector
    folds: int = 5  # cross-fitting folds for the metric
    metric_steps: int = 200  # 0 = no metric (identity)
    metric_lr: float = 3e-3
    metric_decay: float = 0.1  # weight of ‖M − I‖²
    temperature: float = 0.05
    hub_beta: float = 0.5  # 0 = no hubness correction
    hub_k: int = 10
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

    def targets(self) -> Matrix:
        """(N, D): the normalised mean caption vector of each photo."""
        sums = np.zeros((self.n_photos, self.caption_vectors.shape[1]), np.float32)
        np.add.at(sums, self.caption_owner, self.caption_vectors)
        return l2_normalize(sums)


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


def fit_ridge(x: NDArray[np.floating], y: NDArray[np.floating], alpha: float
              ) -> tuple[Matrix, Matrix]:
    """(W, b) minimising ‖x W + b − y‖² + alpha ‖W‖² (float64 normal equations)."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_mean, y_mean = x64.mean(axis=0), y64.mean(axis=0)
    xc = x64 - x_mean
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += alpha
    weight = np.linalg.solve(gram, xc.T @ (y64 - y_mean))
    return weight.astype(np.float32), (y_mean - x_mean @ weight).astype(np.float32)


def fit_views(inputs: NDArray[np.floating], targets: Matrix, alpha: float
              ) -> tuple[Matrix, Matrix]:
    """Ridge over every view of every photo (the penalty scales with the views)."""
    views = inputs.shape[0]
    return fit_ridge(inputs.reshape(-1, inputs.shape[-1]), np.tile(targets, (views, 1)),
                     alpha * views)


def cross_fitted(photos: TrainingPhotos, options: ProjectionTrainOptions) -> Matrix:
    """Each photo's ridge prediction (view 0) by a ridge fitted without it."""
    targets = photos.targets()
    order = np.random.default_rng(options.seed).permutation(photos.n_photos)
    out = np.zeros_like(targets)
    for k in range(options.folds):
        held = order[k::options.folds]
        kept = np.setdiff1d(order, held)
        w, b = fit_views(photos.inputs[:, kept], targets[kept], options.alpha)
        out[held] = photos.inputs[0, held].astype(np.float32) @ w + b
    return out


def learn_metric(vectors: Matrix, captions: Matrix, owner: NDArray[np.int64],
                 options: ProjectionTrainOptions) -> Matrix:
    """M (D, D) minimising InfoNCE(captions → normalise(M v)) + decay‖M − I‖², from M = I."""
    torch.manual_seed(options.seed)
    v = torch.from_numpy(np.asarray(vectors, np.float32))
    q = torch.from_numpy(np.asarray(captions, np.float32))
    target = torch.from_numpy(np.asarray(owner, np.int64))
    eye = torch.eye(v.shape[1])
    metric = torch.nn.Parameter(eye.clone())
    optimizer = torch.optim.Adam([metric], lr=options.metric_lr, foreach=False)
    for _ in range(options.metric_steps):
        served = F.normalize(v @ metric.T, dim=-1)
        loss = F.cross_entropy(q @ served.T / options.temperature, target)
        loss = loss + options.metric_decay * ((metric - eye) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return metric.detach().numpy().astype(np.float32)


def train_projection(photos: TrainingPhotos, *, image_size: int,
                     options: ProjectionTrainOptions = ProjectionTrainOptions(),
                     meta: dict[str, object] | None = None) -> ProjectionHead:
    """The full head from training photos (see the module docstring)."""
    weight, bias = fit_views(photos.inputs, photos.targets(), options.alpha)
    head = ProjectionHead(weight=weight, bias=bias, image_size=image_size,
                          text_weight=options.text_weight, gem_p=GEM_P,
                          meta=dict(meta or {}, photos=photos.n_photos,
                                    views=int(photos.inputs.shape[0]),
                                    captions=int(photos.caption_vectors.shape[0]),
                                    options=asdict(options)))
    if options.metric_steps > 0:
        held_out = cross_fitted(photos, options)
        fused = head.fuse(photos.tag_vectors, held_out)  # no metric, no bank yet
        head.metric = learn_metric(fused, photos.caption_vectors, photos.caption_owner, options)
    if options.hub_beta > 0:
        head.bank = np.asarray(photos.caption_vectors, np.float32)
        head.hub_beta, head.hub_k = options.hub_beta, options.hub_k
    return head
