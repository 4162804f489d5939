"""Beam search over a caption decoder, batched: B images × K beams decode as one (B·K) batch.

Any decoder works that has `start(features, beams) → state` (`beams` rows per image, an image's
rows together), `step(words, state) → (logits, state, _)`, `state.select(rows)` (rows kept, in
groups of `beams`: the images still searching) and `state.reorder(rows)` (rows that stay with
their own image): the Show, Attend and Tell LSTM and the transformer decoder.
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

    def start(self, features: torch.Tensor, beams: int = 1) -> Any: ...

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
    n = features.shape[0]
    device = features.device
    state = model.start(features, beams=k)
    active = list(range(n))  # the images still searching, in the order of the batch's rows
    words = torch.full((n * k,), Vocabulary.start, dtype=torch.long, device=device)
    scores = torch.full((n, k), _NEG, device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one so the first step has k distinct words
    history = torch.zeros((n, k, 0), dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    banned = [Vocabulary.pad, Vocabulary.start, Vocabulary.unk]
    for t in range(max_words + 1):
        b = len(active)
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
        searching: list[int] = []  # rows of the batch whose image goes on
        # plain lists once per step: per-row tensor access costs more than the model step
        rows_scores, rows_beams, rows_tokens = (top_scores.tolist(), beams.tolist(),
                                                tokens.tolist())
        for i, image in enumerate(active):
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
                        finished[image].append((s / max(1, len(seq)) ** length_penalty, seq))
                elif live < k:
                    next_scores[i][live], next_beam[i][live] = s, beam
                    next_words[i][live] = token
                    live += 1
                if live == k:
                    break
            if not _settled(finished[image], next_scores[i][0], k, max_words, length_penalty):
                searching.append(i)
        if not searching:
            break
        # the rows of the images still searching, each image's beams in their new places;
        # a settled image leaves the batch (later steps cost only what is still searching)
        order = (torch.tensor(searching, device=device)[:, None] * k
                 + torch.tensor([next_beam[i] for i in searching], device=device)).reshape(-1)
        state = (state.reorder(order) if len(searching) == b
                 else state.select(order))
        history = torch.cat([history.reshape(b * k, -1)[order].reshape(len(searching), k, -1),
                             torch.tensor([next_words[i] for i in searching],
                                          device=device)[:, :, None]], dim=2)
        scores = torch.tensor([next_scores[i] for i in searching], device=device)
        words = history[:, :, -1].reshape(-1)
        active = [active[i] for i in searching]
    for i, image in enumerate(active):  # out of steps with no hypothesis ended: its best beam
        if not finished[image]:
            finished[image].append((0.0, history[i, 0].tolist()))
    return [max(hypotheses, key=lambda item: item[0])[1] for hypotheses in finished]


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
