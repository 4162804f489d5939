"""Where the decoder's regions come from during training: the feature cache (frozen CNN, the
default) or the CNN itself, run with gradients (fine-tuning, best on a GPU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from services.caption.captioners.backbone import EfficientNetBackbone
from services.caption.training.features import VIEWS
from shared.images import decode_rgb


class CachedRegions:
    """Regions from cached feature maps (M views, N images, L, F)."""

    def __init__(self, maps: NDArray[np.float16], device: torch.device) -> None:
        self.maps = maps
        self.device = device

    @property
    def n_views(self) -> int:
        return int(self.maps.shape[0])

    def mean(self) -> torch.Tensor:
        """The mean image's regions (1, L, F), for language-model pre-training."""
        return torch.from_numpy(self.maps[0].astype(np.float32).mean(axis=0, keepdims=True))

    def __call__(self, images: NDArray[np.int64], views: NDArray[np.int64]) -> torch.Tensor:
        return torch.from_numpy(self.maps[views, images].astype(np.float32)).to(self.device)


class LiveRegions:
    """Regions computed by the CNN on every step, so its weights can be trained too.

    Batch-norm statistics stay frozen (eval mode): the batches are small.
    """

    views = ("centre", "flip")

    def __init__(self, paths: Sequence[Path], backbone: EfficientNetBackbone) -> None:
        self.paths = list(paths)
        self.backbone = backbone
        self.module = backbone.module
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(True)

    @property
    def n_views(self) -> int:
        return len(self.views)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.module.parameters())

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def __call__(self, images: NDArray[np.int64], views: NDArray[np.int64]) -> torch.Tensor:
        pixels = np.stack([VIEWS[self.views[v]](decode_rgb(self.paths[i].read_bytes()),
                                                self.backbone)
                           for i, v in zip(images.tolist(), views.tolist(), strict=True)])
        batch = torch.from_numpy(pixels).to(self.backbone.device)
        return self.module.extract_features(batch).flatten(2).transpose(1, 2)
