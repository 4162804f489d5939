"""Beam search over the decoder, batched: B images × K beams decode as one (B·K) batch."""

from __future__ import annotations

import torch

from services.caption.sat.model import ShowAttendTell
from services.caption.sat.vocab import Vocabulary

_NEG = -1e9


@torch.inference_mode()
def beam_search(model: ShowAttendTell, features: torch.Tensor, *, beam_width: int = 3,
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


def _search(model: ShowAttendTell, features: torch.Tensor, k: int, max_words: int,
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
        new_scores = torch.full((b, k), _NEG, device=device)
        new_beam = torch.zeros((b, k), dtype=torch.long, device=device)
        new_words = torch.full((b, k), Vocabulary.end, dtype=torch.long, device=device)
        for i in range(b):
            live = 0
            for s, beam, token in zip(top_scores[i].tolist(), beams[i].tolist(),
                                      tokens[i].tolist(), strict=True):
                if s <= _NEG / 2:
                    break
                if token == Vocabulary.end:
                    seq = history[i, beam].tolist()
                    norm = max(1, len(seq)) ** length_penalty
                    finished[i].append((s / norm, seq))
                elif live < k:
                    new_scores[i, live], new_beam[i, live] = s, beam
                    new_words[i, live] = token
                    live += 1
                if live == k:
                    break
        if all(len(f) >= k for f in finished):
            break
        order = (torch.arange(b, device=device)[:, None] * k + new_beam).reshape(-1)
        state = state.select(order)
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
