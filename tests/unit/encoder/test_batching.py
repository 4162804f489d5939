import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.encoder.batching import MicroBatcher


def fake_encode(texts: Sequence[str]) -> np.ndarray:
    """Row i = [len(text_i), 1]: lets a test check each caller gets its own rows back."""
    return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def run_concurrently(batcher: MicroBatcher, requests: list[list[str]]) -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        try:
            return await asyncio.gather(*(batcher.encode(r) for r in requests))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_rows() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(fake_encode, pool, max_batch=64, wait_ms=20)
        requests = [["a" * n] for n in range(1, 9)] + [["xx", "yyy"]]
        results = run_concurrently(batcher, requests)
    assert [r[:, 0].tolist() for r in results] == [[n] for n in range(1, 9)] + [[2, 3]]
    assert batcher.batches == 1


def test_batches_are_capped_at_max_batch_texts() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(fake_encode, pool, max_batch=4, wait_ms=20)
        results = run_concurrently(batcher, [["t"] for _ in range(10)])
    assert len(results) == 10
    assert batcher.batches == 3


def test_an_encoder_error_reaches_every_caller_of_the_batch() -> None:
    def broken(texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(broken, pool, wait_ms=5)
        with pytest.raises(RuntimeError, match="exploded"):
            run_concurrently(batcher, [["a"], ["b"]])


def test_batched_callers_get_the_vectors_they_would_get_alone(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    """Real forward passes: padding a text next to longer ones must not change its vector."""
    texts = ["a dog", "the cat runs through the grass on the beach", "red car on the street",
             "a man", "dog", "a woman in the water with a ball"]
    alone = [tiny_encoder.encode([t])[0] for t in texts]
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(tiny_encoder.encode, pool, max_batch=64, wait_ms=20)
        results = run_concurrently(batcher, [[t] for t in texts] + [texts[:2]])
    assert batcher.batches == 1
    for got, want in zip(results, alone, strict=False):
        np.testing.assert_allclose(got[0], want, atol=1e-5)
    np.testing.assert_allclose(results[-1], np.stack(alone[:2]), atol=1e-5)


def test_callers_that_arrive_while_a_batch_runs_form_the_next_batch() -> None:
    """Closed-loop load: requests queue behind the running forward pass and share the next.
    The test waits on conditions (the first pass running, five callers queued), not on time."""
    import threading

    running, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow_encode(texts: Sequence[str]) -> np.ndarray:
        seen.append(len(texts))
        if len(seen) == 1:
            running.set()
            release.wait(30)
        return fake_encode(texts)

    async def main(batcher: MicroBatcher) -> list[np.ndarray]:
        first = asyncio.ensure_future(batcher.encode(["first"]))
        assert await asyncio.to_thread(running.wait, 30)  # the first batch is now running
        rest = [asyncio.ensure_future(batcher.encode(["x" * n])) for n in range(1, 6)]
        async with asyncio.timeout(30):
            while batcher.waiting < 5:  # every later caller is queued behind it
                await asyncio.sleep(0)
        release.set()
        try:
            return await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(slow_encode, pool, max_batch=64, wait_ms=1)
        results = asyncio.run(main(batcher))
    assert seen == [1, 5]
    assert [r[0, 0] for r in results] == [5, 1, 2, 3, 4, 5]
