"""Batches for the caption decoder: (regions, padded token ids) from cached CNN features."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from services.caption.sat.vocab import Vocabulary


def pad_tokens(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Id lists → (B, T) long tensor padded with <pad> (0)."""
    width = max(len(s) for s in sequences)
    out = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass(frozen=True)
class CaptionPairs:
    """Every (image, caption) pair of a training set, captions already encoded."""

    image_index: NDArray[np.int64]  # (P,) row of the feature set
    tokens: list[list[int]]  # (P,) <start> … <end>

    @classmethod
    def build(cls, captions: Sequence[Sequence[str]], vocab: Vocabulary,
              max_words: int) -> CaptionPairs:
        index, tokens = [], []
        for i, caps in enumerate(captions):
            for caption in caps:
                ids = vocab.encode(caption, max_words)
                if len(ids) > 2:  # at least one word
                    index.append(i)
                    tokens.append(ids)
        return cls(np.asarray(index, dtype=np.int64), tokens)

    def __len__(self) -> int:
        return len(self.tokens)


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                   pool: int = 32) -> list[NDArray[np.int64]]:
    """Shuffled batches of row ids, rows of similar length together (less padding): shuffle,
    sort within pools of `pool` batches by length, cut, then shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches: list[NDArray[np.int64]] = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def pair_batches(pairs: CaptionPairs, n_views: int, batch_size: int, rng: np.random.Generator
                 ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], torch.Tensor]]:
    """One epoch of batches: image rows, a random view of each, padded tokens."""
    for rows in length_batches([len(t) for t in pairs.tokens], batch_size, rng):
        views = rng.integers(0, n_views, size=len(rows))
        yield pairs.image_index[rows], views, pad_tokens([pairs.tokens[r] for r in rows])


def text_batches(tokens: Sequence[Sequence[int]], mean_regions: torch.Tensor, batch_size: int,
                 rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Language-model pre-training batches: text-only captions, each paired with the mean
    training image (the decoder learns the language before it learns to look)."""
    for rows in length_batches([len(t) for t in tokens], batch_size, rng):
        regions = mean_regions.expand(len(rows), -1, -1)
        yield regions, pad_tokens([tokens[r] for r in rows])
