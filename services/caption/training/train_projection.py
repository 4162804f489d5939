"""Training the projection head: ridge regression from pooled CNN features (every cached view
of every photo: cheap augmentation) onto the mean text vector of each photo's human captions.

Why ridge and not a contrastive (InfoNCE) head: with ~600 training photos and 1,280 features a
contrastive head separates the training set perfectly within a few steps and gets worse on
held-out photos from the first evaluation on, even started from the ridge solution; ridge's
shrinkage is what generalises here (measured in bench/quality_cv.py, docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from services.caption.projection import ProjectionHead, fit_ridge
from services.caption.training.features import GEM_P, FeatureSet
from services.caption.training.text_vectors import cached_text_vectors
from shared.clients import TextEncoderClient
from shared.vectors import l2_normalize

DEFAULT_ALPHA = 1000.0


@dataclass(frozen=True)
class ProjectionTrainOptions:
    alpha: float = DEFAULT_ALPHA  # ridge penalty per view (scaled by the number of views)
    text_weight: float = 0.35  # the caption vector's weight in the fused vector
    captioner: str = "*"  # the captioner that weight was tuned for ("*" = any)


def caption_targets(captions: Sequence[Sequence[str]], encoder: TextEncoderClient,
                    cache_dir: Path, model: str) -> NDArray[np.float32]:
    """(N, D): the normalised mean text vector of each photo's captions."""
    flat = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    vectors = cached_text_vectors(flat, encoder, cache_dir, model=model, desc="caption vectors")
    sums = np.zeros((len(captions), vectors.shape[1]), np.float32)
    np.add.at(sums, owner, vectors)
    return l2_normalize(sums)


def train_projection(features: Sequence[FeatureSet], targets: Sequence[NDArray[np.float32]],
                     *, image_size: int, options: ProjectionTrainOptions,
                     meta: dict[str, object] | None = None) -> ProjectionHead:
    """Fit the head on every view of every photo of every set (targets repeat per view)."""
    xs, ys = [], []
    views = {f.pooled.shape[0] for f in features}
    if len(views) != 1:
        raise ValueError("all feature sets need the same views")
    n_views = views.pop()
    for feats, target in zip(features, targets, strict=True):
        if feats.pooled.shape[1] != target.shape[0]:
            raise ValueError("one target per photo")
        xs.append(feats.pooled.reshape(-1, feats.pooled.shape[-1]).astype(np.float32))
        ys.append(np.tile(target, (n_views, 1)))
    weight, bias = fit_ridge(np.vstack(xs), np.vstack(ys), options.alpha * n_views)
    return ProjectionHead(weight=weight, bias=bias, image_size=image_size, gem_p=GEM_P,
                          text_weights={options.captioner: options.text_weight},
                          meta=dict(meta or {}, alpha=options.alpha, views=n_views,
                                    photos=int(sum(t.shape[0] for t in targets))))
