"""The Show, Attend and Tell decoder (Xu et al., 2015, soft attention).

Input: CNN regions (B, L, F) — EfficientNet-Lite0's 7×7×1280 grid is L = 49 regions of F = 1280.
Each step attends over the regions with the previous hidden state (an MLP score, softmax), gates
the context with β = σ(f_β(h)) (§4.2.1), feeds [word embedding; context] to an LSTM cell and
predicts the next word with the paper's deep output layer L_o(E y + L_h h + L_z z). The output
layer shares its weights with the word embedding (Press & Wolf, 2017), which halves the words'
share of the checkpoint. `caption_loss` adds the doubly stochastic attention penalty
λ Σ_i (1 − Σ_t α_ti)², which pushes the decoder to look at every region over a caption.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

C = TypeVar("C", bound="SavedConfig")


class SavedConfig:
    """A decoder config as the dict its checkpoint stores (unknown keys of older files are
    ignored, missing ones take the defaults)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class SatConfig(SavedConfig):
    """Shapes and regularisation of one decoder; saved in its checkpoint."""

    vocab_size: int
    feature_dim: int = 1280
    encoder_dim: int = 384  # regions are projected to this before attention
    embed_dim: int = 256
    hidden_dim: int = 384
    attention_dim: int = 192
    dropout: float = 0.5
    max_words: int = 20  # captions are cut to this many words in training and generation
    alpha_c: float = 1.0  # weight of the doubly stochastic attention penalty


@dataclass
class DecoderState:
    """What one decoding step needs besides the previous word."""

    regions: torch.Tensor  # (B, L, D) projected regions
    keys: torch.Tensor  # (B, L, A) their attention projections, computed once
    h: torch.Tensor  # (B, H)
    c: torch.Tensor  # (B, H)

    def select(self, rows: torch.Tensor) -> DecoderState:
        return DecoderState(self.regions[rows], self.keys[rows], self.h[rows], self.c[rows])

    def reorder(self, rows: torch.Tensor) -> DecoderState:
        """`select` for rows that stay with their own image: only the LSTM state moves."""
        return DecoderState(self.regions, self.keys, self.h[rows], self.c[rows])


class ShowAttendTell(nn.Module):
    """LSTM decoder with soft attention over image regions."""

    def __init__(self, config: SatConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.adapt = nn.Sequential(nn.Linear(c.feature_dim, c.encoder_dim), nn.ReLU())
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0)
        self.att_regions = nn.Linear(c.encoder_dim, c.attention_dim)
        self.att_hidden = nn.Linear(c.hidden_dim, c.attention_dim)
        self.att_score = nn.Linear(c.attention_dim, 1)
        self.init_h = nn.Linear(c.encoder_dim, c.hidden_dim)
        self.init_c = nn.Linear(c.encoder_dim, c.hidden_dim)
        self.gate = nn.Linear(c.hidden_dim, c.encoder_dim)
        self.lstm = nn.LSTMCell(c.embed_dim + c.encoder_dim, c.hidden_dim)
        self.out_hidden = nn.Linear(c.hidden_dim, c.embed_dim)
        self.out_context = nn.Linear(c.encoder_dim, c.embed_dim)
        self.out_words = nn.Linear(c.embed_dim, c.vocab_size)
        self.out_words.weight = self.embed.weight  # tied
        self.drop = nn.Dropout(c.dropout)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def start(self, features: torch.Tensor, beams: int = 1) -> DecoderState:
        """Regions (B, L, F) → the initial state (h0, c0 from the mean region, as the paper),
        `beams` rows per image."""
        regions = self.adapt(features.float())
        mean = regions.mean(dim=1)
        state = DecoderState(regions, self.att_regions(regions),
                             torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        if beams == 1:
            return state
        return state.select(torch.arange(len(features), device=features.device)
                            .repeat_interleave(beams))

    def step(self, words: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """Previous words (B,) → next-word logits (B, V), the new state, attention (B, L)."""
        emb = self.embed(words)
        scores = self.att_score(torch.tanh(state.keys + self.att_hidden(state.h)[:, None]))
        alpha = torch.softmax(scores.squeeze(-1), dim=1)
        context = (alpha.unsqueeze(-1) * state.regions).sum(dim=1)
        context = torch.sigmoid(self.gate(state.h)) * context
        h, c = self.lstm(torch.cat([emb, context], dim=1), (state.h, state.c))
        deep = emb + self.out_hidden(h) + self.out_context(context)
        logits = self.out_words(self.drop(deep))
        return logits, DecoderState(state.regions, state.keys, h, c), alpha

    def forward(self, features: torch.Tensor, tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: tokens (B, T) = <start> … <end> <pad>…; returns logits for
        tokens[:, 1:] (B, T-1, V) and the attention weights (B, T-1, L)."""
        state = self.start(features)
        logits, alphas = [], []
        for t in range(tokens.shape[1] - 1):
            out, state, alpha = self.step(tokens[:, t], state)
            logits.append(out)
            alphas.append(alpha)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor, alphas: torch.Tensor,
                 alpha_c: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the next words (padding ignored) + the doubly stochastic penalty."""
    targets = tokens[:, 1:]
    mask = targets != 0
    ce = F.cross_entropy(logits[mask].float(), targets[mask], label_smoothing=label_smoothing)
    if alpha_c <= 0:
        return ce
    attention = (alphas.float() * mask.unsqueeze(-1)).sum(dim=1)  # Σ_t α_ti over real steps
    return ce + alpha_c * ((1.0 - attention) ** 2).mean()
