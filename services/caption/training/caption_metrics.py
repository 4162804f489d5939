"""Caption quality against human references: corpus BLEU-1..4 and CIDEr-D, 0-100.

BLEU (Papineni et al., 2002) as the COCO caption toolkit computes it at corpus level: n-gram
counts clipped by the most any one reference uses, summed over the corpus, geometric mean of
the 1..n precisions, times the brevity penalty exp(1 - r/c) when the candidates are shorter
than the references (r = for each candidate, the reference length closest to it; ties to the
shorter). CIDEr-D (Vedantam et al., 2015): TF-IDF n-gram vectors (n = 1..4, document
frequencies over the reference sets), clipped, Gaussian length penalty σ = 6, ×10.
Texts are lower-cased words with punctuation dropped (`sat.vocab.tokenize`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.caption.sat.vocab import tokenize

Ngrams = Counter[tuple[str, ...]]


def ngrams(words: Sequence[str], n: int) -> Ngrams:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class CaptionScores:
    n: int
    bleu: tuple[float, float, float, float]  # BLEU-1..4, 0-100
    cider: float  # CIDEr-D ×100 (the usual "CIDEr 50" = 0.50)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"n": self.n}
        out.update({f"bleu{i + 1}": round(b, 2) for i, b in enumerate(self.bleu)})
        out["cider"] = round(self.cider, 2)
        return out


def corpus_bleu(candidates: Sequence[Sequence[str]],
                references: Sequence[Sequence[Sequence[str]]], max_n: int = 4) -> list[float]:
    """BLEU-1..max_n (0-1) of tokenised candidates, each against its tokenised references."""
    if len(candidates) != len(references):
        raise ValueError("one reference set per candidate")
    matched = [0] * max_n
    total = [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        if not refs:
            raise ValueError("every candidate needs at least one reference")
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(cand, n)
            best: Ngrams = Counter()
            for ref in refs:
                best |= ngrams(ref, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            total[n - 1] += max(0, len(cand) - n + 1)
    if cand_len == 0:
        return [0.0] * max_n
    penalty = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    scores, log_sum = [], 0.0
    for n in range(max_n):
        if matched[n] == 0:
            scores.extend([0.0] * (max_n - n))
            break
        log_sum += math.log(matched[n] / total[n])
        scores.append(penalty * math.exp(log_sum / (n + 1)))
    return scores


def cider_d(candidates: Sequence[Sequence[str]],
            references: Sequence[Sequence[Sequence[str]]], sigma: float = 6.0) -> float:
    """CIDEr-D (0-10 scale, as the COCO toolkit) averaged over the candidates."""
    n_images = len(references)
    if n_images == 0:
        return 0.0
    df: Counter[tuple[str, ...]] = Counter()
    for refs in references:
        df.update({g for ref in refs for n in range(1, 5) for g in ngrams(ref, n)})
    log_n = math.log(float(n_images))

    def vector(words: Sequence[str], n: int) -> tuple[dict[tuple[str, ...], float], float]:
        tf = ngrams(words, n)
        vec = {g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in tf.items()}
        return vec, math.sqrt(sum(v * v for v in vec.values()))

    total = 0.0
    for cand, refs in zip(candidates, references, strict=True):
        score = 0.0
        for n in range(1, 5):
            cv, cn = vector(cand, n)
            for ref in refs:
                rv, rn = vector(ref, n)
                dot = sum(min(v, rv[g]) * rv[g] for g, v in cv.items() if g in rv)
                if cn and rn:
                    delta = len(cand) - len(ref)
                    score += dot / (cn * rn) * math.exp(-(delta ** 2) / (2 * sigma ** 2))
        total += score / 4 / len(refs) * 10.0
    return total / n_images


def score_captions(candidates: Sequence[str], references: Sequence[Sequence[str]]
                   ) -> CaptionScores:
    """BLEU-1..4 and CIDEr-D of generated captions against their human references."""
    cands = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in rs] for rs in references]
    bleu = corpus_bleu(cands, refs)
    return CaptionScores(len(cands), (bleu[0] * 100, bleu[1] * 100, bleu[2] * 100,
                                      bleu[3] * 100), cider_d(cands, refs) * 100)
