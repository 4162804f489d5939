"""The gateway's query-vector cache: identical vectors on a hit, bounded, keyed by model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from services.gateway.querycache import CachedTextEncoder, cache_entries, cache_key


class CountingEncoder:
    """Row i = a vector derived from text i; records every batch it was asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.closed = False
        self.fail = False

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("encoder down")
        rng = [np.random.default_rng(abs(hash(t)) % 2**32) for t in texts]
        return np.stack([r.standard_normal(8).astype(np.float32) for r in rng])

    async def aclose(self) -> None:
        self.closed = True


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_hit_returns_the_identical_vector_without_calling_the_encoder() -> None:
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, model="m", max_entries=10)
    first = run(cache.encode(["a dog on a beach"]))
    second = run(cache.encode(["a dog on a beach"]))
    assert inner.calls == [["a dog on a beach"]]
    assert first.dtype == np.float32 and first.shape == (1, 8)
    assert first.tobytes() == second.tobytes()
    assert (cache.hits, cache.misses) == (1, 1)


def test_whitespace_variants_share_an_entry_but_case_does_not() -> None:
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, model="m")
    run(cache.encode(["a dog  on a\tbeach "]))
    run(cache.encode(["a dog on a beach"]))
    assert len(inner.calls) == 1
    run(cache.encode(["A dog on a beach"]))  # the model may be cased: its own entry
    assert len(inner.calls) == 2


def test_entries_are_keyed_by_model() -> None:
    assert cache_key("m1", "dog") != cache_key("m2", "dog")
    assert cache_key("m1", " dog  run ") == cache_key("m1", "dog run")


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, model="m", max_entries=2)
    run(cache.encode(["a"]))
    run(cache.encode(["b"]))
    run(cache.encode(["a"]))  # a is now the most recently used
    run(cache.encode(["c"]))  # evicts b
    assert len(cache) == 2
    inner.calls.clear()
    run(cache.encode(["a"]))
    run(cache.encode(["c"]))
    assert inner.calls == []
    run(cache.encode(["b"]))
    assert inner.calls == [["b"]]
    assert len(cache) == 2


def test_a_mixed_call_encodes_only_the_misses_once_and_keeps_the_order() -> None:
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, model="m")
    alone = {t: run(CachedTextEncoder(CountingEncoder(), model="m").encode([t]))[0]
             for t in ("x", "y", "z")}
    run(cache.encode(["y"]))
    out = run(cache.encode(["x", "y", "z", "x"]))
    assert inner.calls == [["y"], ["x", "z"]]
    for row, text in zip(out, ["x", "y", "z", "x"], strict=True):
        np.testing.assert_array_equal(row, alone[text])


def test_callers_cannot_change_what_the_cache_holds() -> None:
    cache = CachedTextEncoder(CountingEncoder(), model="m")
    first = run(cache.encode(["dog"]))
    kept = first.copy()
    first[:] = 0.0
    np.testing.assert_array_equal(run(cache.encode(["dog"])), kept)


def test_a_failed_encode_is_not_cached_and_reaches_the_caller() -> None:
    inner = CountingEncoder()
    inner.fail = True
    cache = CachedTextEncoder(inner, model="m")
    with pytest.raises(RuntimeError, match="encoder down"):
        run(cache.encode(["dog"]))
    assert len(cache) == 0
    inner.fail = False
    run(cache.encode(["dog"]))
    assert len(inner.calls) == 2


def test_zero_entries_turns_the_cache_off() -> None:
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, model="m", max_entries=0)
    run(cache.encode(["dog"]))
    run(cache.encode(["dog"]))
    assert len(inner.calls) == 2 and len(cache) == 0


def test_aclose_closes_the_inner_client() -> None:
    inner = CountingEncoder()
    run(CachedTextEncoder(inner, model="m").aclose())
    assert inner.closed


def test_the_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSEARCH_QUERY_CACHE_ENTRIES", raising=False)
    assert cache_entries() == 10_000
    monkeypatch.setenv("CAPSEARCH_QUERY_CACHE_ENTRIES", "0")
    assert cache_entries() == 0
    monkeypatch.setenv("CAPSEARCH_QUERY_CACHE_ENTRIES", "-1")
    with pytest.raises(ValueError):
        cache_entries()
