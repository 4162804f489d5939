"""Beam search over a caption decoder, batched: B images × K beams decode as one (B·K) batch.

Any decoder works that has `start(features) → state`, `step(words, state) → (logits, state, _)`,
`state.select(rows)` and `state.reorder(rows)` (rows that stay with their own image): the Show,
Attend and Tell LSTM and the transformer decoder.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from services.caption.sat.vocab import Vocabulary

_NEG = -1e9


class StepDecoder(Protocol):
    config: Any  # .max_words
    training: bool

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def parameters(self) -> Any: ...

    def start(self, features: torch.Tensor) -> Any: ...

    def step(self, words: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any, Any]: ...


@torch.inference_mode()
def beam_search(model: StepDecoder, features: torch.Tensor, *, beam_width: int = 3,
                max_words: int | None = None, length_penalty: float = 0.0,
                min_words: int = 2) -> list[list[int]]:
    """The best word-id sequence (no <start>/<end>) of each image of `features` (B, L, F).

    A finished hypothesis scores its summed log-probability / len**`length_penalty`
    (0 = the plain beam search of the paper). <pad>, <start> and <unk> are never generated,
    nor <end> before `min_words` words.
    """
    was_training = model.training
    model.eval()
    try:
        return _search(model, features, max(1, beam_width),
                       max_words or model.config.max_words, length_penalty, min_words)
    finally:
        model.train(was_training)


def _search(model: StepDecoder, features: torch.Tensor, k: int, max_words: int,
            length_penalty: float, min_words: int) -> list[list[int]]:
    b = features.shape[0]
    device = features.device
    rows = torch.arange(b, device=device).repeat_interleave(k)
    state = model.start(features).select(rows)
    words = torch.full((b * k,), Vocabulary.start, dtype=torch.long, device=device)
    scores = torch.full((b, k), _NEG, device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one so the first step has k distinct words
    history = torch.zeros((b, k, 0), dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    banned = [Vocabulary.pad, Vocabulary.start, Vocabulary.unk]
    for t in range(max_words + 1):
        logits, state, _ = model.step(words, state)
        logp = torch.log_softmax(logits.float(), dim=-1)
        logp[:, banned] = _NEG
        if t < min_words:
            logp[:, Vocabulary.end] = _NEG
        if t == max_words:  # out of room: only <end> is left
            keep = logp[:, Vocabulary.end].clone()
            logp.fill_(_NEG)
            logp[:, Vocabulary.end] = keep
        vocab = logp.shape[1]
        total = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
        top_scores, top_index = total.topk(2 * k, dim=1)
        beams, tokens = top_index // vocab, top_index % vocab
        next_scores = [[_NEG] * k for _ in range(b)]
        next_beam = [[0] * k for _ in range(b)]
        next_words = [[Vocabulary.end] * k for _ in range(b)]
        # plain lists once per step: per-row tensor access costs more than the model step
        rows_scores, rows_beams, rows_tokens = (top_scores.tolist(), beams.tolist(),
                                                tokens.tolist())
        for i in range(b):
            if done[i]:
                continue
            live = 0
            for rank, (s, beam, token) in enumerate(zip(rows_scores[i], rows_beams[i],
                                                        rows_tokens[i], strict=True)):
                if s <= _NEG / 2:
                    break
                if token == Vocabulary.end:
                    # only an <end> among the k best candidates ends a hypothesis: one further
                    # down would fill the finished list with weak, short captions
                    if rank < k:
                        seq = history[i, beam].tolist()
                        finished[i].append((s / max(1, len(seq)) ** length_penalty, seq))
                elif live < k:
                    next_scores[i][live], next_beam[i][live] = s, beam
                    next_words[i][live] = token
                    live += 1
                if live == k:
                    break
            done[i] = _settled(finished[i], next_scores[i][0], k, max_words, length_penalty)
        if all(done):
            break
        new_scores = torch.tensor(next_scores, device=device)
        new_beam = torch.tensor(next_beam, dtype=torch.long, device=device)
        new_words = torch.tensor(next_words, dtype=torch.long, device=device)
        order = (torch.arange(b, device=device)[:, None] * k + new_beam).reshape(-1)
        state = state.reorder(order)  # beams change places within their image
        history = torch.cat([history.reshape(b * k, -1)[order].reshape(b, k, -1),
                             new_words[:, :, None]], dim=2)
        scores, words = new_scores, new_words.reshape(-1)
    best: list[list[int]] = []
    for i in range(b):
        if finished[i]:
            best.append(max(finished[i], key=lambda item: item[0])[1])
        else:
            best.append(history[i, 0].tolist())
    return best


def _settled(finished: list[tuple[float, list[int]]], best_live: float, k: int,
             max_words: int, length_penalty: float) -> bool:
    """k hypotheses finished and no live one can still beat the best of them (log-probabilities
    only fall as words are added; the length division is at most (max_words + 1)**penalty)."""
    if len(finished) < k:
        return False
    if best_live <= _NEG / 2:
        return True
    bound = best_live / (max_words + 1) ** length_penalty
    return max(score for score, _ in finished) >= bound
