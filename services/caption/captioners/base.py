"""The captioner interface (`caption(images) -> list[str]`, batched) and its registry by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.embedder import ImageEmbedder, ImageEmbedding
from shared.config import Settings
from shared.inference import InferenceModel


@dataclass(frozen=True)
class Analysis:
    """Captions of a batch and, when an embedder was given, its image-side vectors and texts;
    with `duplicates` asked of a captioner that makes a CNN pass, that pass's GeM vectors."""

    captions: list[str]
    image: ImageEmbedding | None = None
    duplicates: NDArray[np.float32] | None = None


class Captioner(InferenceModel):
    """Base of every captioner: `load()` → `_load()` (`shared.inference`), `caption()` →
    `_caption()` per batch.

    `name` is what captions are stored under; `version` changes whenever the same name would
    write different captions (new weights, new rule), so stale captions can be found.
    """

    name: str = ""
    version: str = ""

    def __init__(self, *, batch_size: int = 16) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size

    def __str__(self) -> str:
        return f"captioner {self.name} ({self.version})"

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per RGB image, in order; batches of at most `batch_size`."""
        self.load()
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            out = self._caption(batch)
            if len(out) != len(batch):
                raise RuntimeError(f"{self.name} returned {len(out)} captions for {len(batch)}")
            captions.extend(out)
        return captions

    def analyse(self, images: Sequence[Image.Image],
                embedder: ImageEmbedder | None = None, *, duplicates: bool = False) -> Analysis:
        """Captions and (with `embedder`) image vectors; one CNN pass when they share one (and
        with `duplicates`, that pass's GeM vectors when the captioner makes one)."""
        self.load()
        if embedder is not None:
            embedder.load()
        captions: list[str] = []
        vectors: list[NDArray[np.float32]] = []
        extra: list[str] = []
        dups: list[NDArray[np.float32]] | None = [] if duplicates else None
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            texts, image, found = self._analyse(batch, embedder)
            if dups is not None:
                dups = None if found is None else dups + [found]
            if len(texts) != len(batch):
                raise RuntimeError(f"{self.name} returned {len(texts)} captions for {len(batch)}")
            captions.extend(texts)
            if image is not None:
                vectors.append(np.asarray(image.vectors, dtype=np.float32))
                extra.extend(image.texts)
        dup = np.vstack(dups) if dups else None
        if embedder is None:
            return Analysis(captions, duplicates=dup)
        stacked = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        return Analysis(captions, ImageEmbedding(stacked, extra), dup)

    @classmethod
    def from_settings(cls, settings: Settings) -> Captioner:
        """Build from settings; subclasses with more knobs override this."""
        return cls(batch_size=settings.caption_batch_size)

    def _caption(self, batch: list[Image.Image]) -> list[str]:
        raise NotImplementedError

    def _analyse(self, batch: list[Image.Image], embedder: ImageEmbedder | None
                 ) -> tuple[list[str], ImageEmbedding | None, NDArray[np.float32] | None]:
        """Captions, the embedder's output from its own pass (subclasses share theirs), and
        the GeM vectors of the captioner's CNN pass (None: it makes none; the caller does)."""
        image = embedder.embed(batch) if embedder is not None else None
        return self._caption(batch), image, None


C = TypeVar("C", bound=type[Captioner])
_REGISTRY: dict[str, type[Captioner]] = {}


def register_captioner(name: str) -> Callable[[C], C]:
    """Class decorator: make a `Captioner` subclass buildable by `name`."""

    def decorate(cls: C) -> C:
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"captioner {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_captioners() -> list[str]:
    return sorted(_REGISTRY)


def build_captioner(name: str, settings: Settings) -> Captioner:
    """The captioner registered as `name`, built from settings (not yet loaded)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown captioner {name!r}; available: "
                         f"{', '.join(available_captioners()) or 'none'}") from None
    return cls.from_settings(settings)
