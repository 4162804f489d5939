"""Words ↔ ids for the caption decoder: built from training captions, capped by frequency."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; punctuation dropped ("A dog's toy." → a, dog's, toy)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Ids 0-3 are <pad>, <start>, <end>, <unk>; then words, most frequent first."""

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("duplicate words in the vocabulary")

    pad = 0
    start = 1
    end = 2
    unk = 3

    @classmethod
    def build(cls, captions: Iterable[str], *, max_size: int = 7500,
              min_count: int = 1) -> Vocabulary:
        """The `max_size` most frequent words (ties by first sight) seen `min_count`+ times."""
        counts = Counter(w for text in captions for w in tokenize(text))
        ranked = [w for w, c in counts.most_common() if c >= min_count]
        return cls(list(SPECIALS) + ranked[:max(0, max_size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_words: int | None = None) -> list[int]:
        """<start> w1 … wn <end> (words beyond `max_words` are cut)."""
        ids = [self.index.get(w, self.unk) for w in tokenize(text)]
        if max_words is not None:
            ids = ids[:max_words]
        return [self.start, *ids, self.end]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first <end>; specials (<unk> too) are skipped."""
        words: list[str] = []
        for i in ids:
            if i == self.end:
                break
            if i >= len(SPECIALS):
                words.append(self.words[i])
        return " ".join(words)
