"""A transformer caption decoder: words attend to each other (causally) and to the CNN grid.

Same inputs and outputs as the Show, Attend and Tell decoder (`model.py`): regions (B, L, F) of
the shared CNN pass in, next-word logits out, one step at a time for the beam search
(`beam.py`). The LSTM of the paper is replaced by a few pre-norm transformer decoder blocks, as
in most captioners since (e.g. Huang et al. 2019, "Attention on Attention"; Cornia et al.
2020, the M² transformer): they train in parallel over a caption's words, which makes 7,600
photos × 5 captions an epoch of minutes on a CPU. Regions get a learned position (the grid is
fixed by the CNN input size); generation keeps each block's keys and values (a KV cache), so a
step costs one new position, not the whole prefix. The output layer shares the word embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from services.caption.sat.model import SavedConfig


@dataclass(frozen=True)
class DecoderConfig(SavedConfig):
    """Shapes and regularisation of one decoder; saved in its checkpoint."""

    vocab_size: int
    regions: int = 64  # grid positions: 8×8 at the 256 px CNN input
    feature_dim: int = 1280
    width: int = 256
    layers: int = 2
    heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.3
    max_words: int = 20  # captions are cut to this many words in training and generation


@dataclass
class DecoderState:
    """Per block: the regions' cross-attention keys/values (computed once, one row per image)
    and the keys/values of the words so far (`beams` rows per image, an image's rows
    together); the next position."""

    memory: list[tuple[torch.Tensor, torch.Tensor]]  # (images, H, L, d) each
    cache: list[tuple[torch.Tensor, torch.Tensor]]  # (images·beams, H, t, d) each
    position: int
    beams: int = 1

    def select(self, rows: torch.Tensor) -> DecoderState:
        """Keep these rows (`beams` per image, an image's rows together): dropping images."""
        images = rows[::self.beams] // self.beams
        return DecoderState([(k[images], v[images]) for k, v in self.memory],
                            [(k[rows], v[rows]) for k, v in self.cache], self.position,
                            self.beams)

    def reorder(self, rows: torch.Tensor) -> DecoderState:
        """`select` for rows that stay with their own image (beams swapping places): the
        regions' keys and values stay, only the words' move."""
        return DecoderState(self.memory, [(k[rows], v[rows]) for k, v in self.cache],
                            self.position, self.beams)


class Block(nn.Module):
    """Pre-norm: causal self-attention, cross-attention over the regions, feed-forward."""

    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.norm_self, self.norm_cross, self.norm_ff = (nn.LayerNorm(c.width) for _ in range(3))
        self.qkv = nn.Linear(c.width, 3 * c.width)
        self.out_self = nn.Linear(c.width, c.width)
        self.query = nn.Linear(c.width, c.width)
        self.key_value = nn.Linear(c.width, 2 * c.width)
        self.out_cross = nn.Linear(c.width, c.width)
        self.ff = nn.Sequential(nn.Linear(c.width, c.ff_dim), nn.GELU(), nn.Dropout(c.dropout),
                                nn.Linear(c.ff_dim, c.width))
        # dropout on the residual branches only: attention-weight dropout sends CPU attention
        # to its slow path (2× the step time) for no gain measured here
        self.drop = nn.Dropout(c.dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        return x.view(b, t, self.heads, w // self.heads).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)

    def memory(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(regions).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor],
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, beams: int = 1
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, W): the whole caption (cache None, causal) or the next word after `cache`;
        `memory` holds one row per `beams` rows of x (consecutive rows share an image)."""
        q, k, v = (self._split(t) for t in self.qkv(self.norm_self(x)).chunk(3, dim=-1))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.drop(self.out_self(self._merge(attended)))
        q = self._split(self.query(self.norm_cross(x)))
        if beams > 1:  # one word each: an image's beams query its regions as one sequence
            rows, heads, _, d = q.shape
            q = q.view(rows // beams, beams, heads, d).transpose(1, 2)
            attended = F.scaled_dot_product_attention(q, memory[0], memory[1])
            attended = attended.transpose(1, 2).reshape(rows, heads, 1, d)
        else:
            attended = F.scaled_dot_product_attention(q, memory[0], memory[1])
        x = x + self.drop(self.out_cross(self._merge(attended)))
        return x + self.drop(self.ff(self.norm_ff(x))), (k, v)


class CaptionTransformer(nn.Module):
    """Regions (B, L, F) → captions, word by word."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.adapt = nn.Sequential(nn.LayerNorm(c.feature_dim),
                                   nn.Linear(c.feature_dim, c.width))
        self.region_position = nn.Parameter(torch.zeros(c.regions, c.width))
        self.region_norm = nn.LayerNorm(c.width)
        self.embed = nn.Embedding(c.vocab_size, c.width, padding_idx=0)
        self.word_position = nn.Parameter(torch.zeros(c.max_words + 2, c.width))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm_out = nn.LayerNorm(c.width)
        self.drop = nn.Dropout(c.dropout)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.region_position, std=0.02)
        nn.init.normal_(self.word_position, std=0.02)

    def encode(self, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's cross-attention keys and values of the regions."""
        if features.shape[1] != self.config.regions:
            raise ValueError(f"the decoder was trained on {self.config.regions} CNN regions, "
                             f"got {features.shape[1]}: the CNN input size differs "
                             "(CAPSEARCH_BACKBONE_IMAGE_SIZE)")
        regions = self.adapt(features.float()) + self.region_position
        regions = self.drop(self.region_norm(regions))
        return [block.memory(regions) for block in self.blocks]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm_out(x), self.embed.weight)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor,
                photo_of: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: tokens (N, T) = <start> … <end> <pad>…; returns logits for
        tokens[:, 1:] (N, T-1, V). `photo_of` (N,) maps captions to rows of `features` (the
        captions of one photo share its regions); None = one caption per row."""
        memory = self.encode(features)
        if photo_of is not None:
            memory = [(k[photo_of], v[photo_of]) for k, v in memory]
        inputs = tokens[:, :-1]
        x = self.drop(self.embed(inputs) + self.word_position[:inputs.shape[1]])
        for block, mem in zip(self.blocks, memory, strict=True):
            x, _ = block(x, mem)
        return self._logits(x)

    def start(self, features: torch.Tensor, beams: int = 1) -> DecoderState:
        """The state before the first word, `beams` rows per image (the beam search's
        interface)."""
        memory = self.encode(features)
        rows, w = features.shape[0] * beams, self.config.width
        empty = memory[0][0].new_zeros((rows, self.config.heads, 0, w // self.config.heads))
        return DecoderState(memory, [(empty, empty) for _ in self.blocks], 0, beams)

    def step(self, words: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, None]:
        """Previous words (rows,) → next-word logits (rows, V) and the new state."""
        x = self.embed(words)[:, None] + self.word_position[state.position]
        cache = []
        for block, mem, past in zip(self.blocks, state.memory, state.cache, strict=True):
            x, kv = block(x, mem, past, state.beams)
            cache.append(kv)
        return (self._logits(x[:, 0]),
                DecoderState(state.memory, cache, state.position + 1, state.beams), None)


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the next words, padding ignored (by `ignore_index`: a boolean mask
    would copy the (N, T, V) logits out and scatter their gradient back)."""
    return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(),
                           ignore_index=0, label_smoothing=label_smoothing)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, norms, embeddings and positions do not."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        plain = param.ndim < 2 or "position" in name or name.startswith("embed")
        (keep if plain else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]
