"""A bounded LRU cache of query vectors in front of the encoder service.

Popular searches repeat ("dog on a beach"), and encoding one is the costliest step of a query
(a transformer forward pass plus an HTTP hop). The cache keys each text by the model that
encodes it and the text with its whitespace collapsed: the tokenizer splits on whitespace, so
those texts get the same vector. Case and accents are kept: the model may be cased.

A hit returns a copy of the stored vector (byte-identical to what the encoder answered);
misses of one call are encoded together in one request. Hits and misses are counted in
`capsearch_query_vector_cache_total{result=hit|miss}`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter

from shared.clients import EncoderClient

# how many query vectors the gateway keeps (0 turns the cache off); ~1.6 KB each at 384 dims
ENTRIES_ENV = "CAPSEARCH_QUERY_CACHE_ENTRIES"
DEFAULT_ENTRIES = 10_000

CACHE_LOOKUPS = Counter("capsearch_query_vector_cache_total",
                        "Query-vector cache lookups in the gateway, by result", ["result"])


def cache_entries() -> int:
    """The configured cache size (env CAPSEARCH_QUERY_CACHE_ENTRIES, default 10,000)."""
    raw = os.environ.get(ENTRIES_ENV, "").strip()
    if not raw:
        return DEFAULT_ENTRIES
    value = int(raw)
    if value < 0:
        raise ValueError(f"{ENTRIES_ENV} must be 0 or more, not {value}")
    return value


def cache_key(model: str, text: str) -> tuple[str, str]:
    return model, " ".join(text.split())


class CachedTextEncoder:
    """An `EncoderClient` that remembers the last `max_entries` texts' vectors."""

    def __init__(self, encoder: EncoderClient, *, model: str,
                 max_entries: int = DEFAULT_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be 0 or more")
        self.inner = encoder
        self.model = model
        self.max_entries = max_entries
        self._vectors: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        texts = list(texts)
        if self.max_entries == 0 or not texts:
            return await self.inner.encode(texts)
        keys = [cache_key(self.model, t) for t in texts]
        found: dict[tuple[str, str], NDArray[np.float32]] = {}
        for key in keys:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                found[key] = vector
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        hits = len(keys) - sum(1 for k in keys if k not in found)
        self.hits += hits
        self.misses += len(keys) - hits
        CACHE_LOOKUPS.labels("hit").inc(hits)
        CACHE_LOOKUPS.labels("miss").inc(len(keys) - hits)
        if missing:
            # the first text of each missing key, as the caller wrote it
            first = {}
            for key, text in zip(keys, texts, strict=True):
                first.setdefault(key, text)
            encoded = await self.inner.encode([first[k] for k in missing])
            for key, vector in zip(missing, encoded, strict=True):
                stored = np.array(vector, dtype=np.float32)  # own copy, never a view
                stored.setflags(write=False)
                found[key] = stored
                self._remember(key, stored)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _remember(self, key: tuple[str, str], vector: NDArray[np.float32]) -> None:
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.max_entries:
            self._vectors.popitem(last=False)

    def clear(self) -> None:
        self._vectors.clear()

    async def aclose(self) -> None:
        await self.inner.aclose()
