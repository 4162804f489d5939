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
