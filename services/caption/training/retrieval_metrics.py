"""Retrieval quality of image vectors against caption queries, computed in memory.

The same figures as `capsearch eval retrieval` (R@1/5/10 in percent, median rank, every human
caption a query, its own photo the answer) for protocols that train and score many times.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.stats import betabinom

from shared.vectors import l2_normalize


def caption_ranks(image_vectors: NDArray[np.floating], query_vectors: NDArray[np.floating],
                  owner: NDArray[np.integer]) -> NDArray[np.int64]:
    """Rank (1 = best) of each query's own photo among all photos, by cosine; ties count
    against the query (a photo scoring equal to the right one is ranked before it)."""
    scores = l2_normalize(query_vectors) @ l2_normalize(image_vectors).T
    own = scores[np.arange(len(owner)), owner]
    return (scores >= own[:, None]).sum(axis=1).astype(np.int64)


def summarise(ranks: NDArray[np.integer]) -> dict[str, float]:
    r = np.asarray(ranks)
    return {"r1": round(100.0 * float(np.mean(r <= 1)), 1),
            "r5": round(100.0 * float(np.mean(r <= 5)), 1),
            "r10": round(100.0 * float(np.mean(r <= 10)), 1),
            "median_rank": float(np.median(r))}


def extrapolate(ranks: NDArray[np.integer], pool: int, target_pool: int,
                prior: float = 0.5) -> dict[str, float]:
    """R@K expected in a pool of `target_pool` photos from ranks in pools of `pool`.

    For each query, b = rank − 1 of the pool's other photos beat its own; the chance p that a
    further photo does gets a Beta(b + prior, pool − 1 − b + prior) posterior, and the number
    of the target pool's other photos that beat it is beta-binomial. With Jeffreys' prior
    (0.5) this reproduces tag-caption figures measured on the real pool (8.7 vs 8.9 R@1 from
    100 to 500 photos) but underestimates strong models, whose many rank-1 queries the prior
    treats as less certain than they are (22 vs 29 R@1 from 50 to 250 photos): a floor.
    """
    b = np.asarray(ranks, dtype=np.float64) - 1
    others = pool - 1

    def share(k: int) -> float:
        """The expected fraction of queries whose photo ranks ≤ k in the target pool."""
        return float(np.mean(betabinom.cdf(k - 1, target_pool - 1, b + prior,
                                           others - b + prior)))

    out = {f"r{k}": round(100.0 * share(k), 1) for k in (1, 5, 10)}
    # the median of the expected rank distribution: the least k with share(k) ≥ ½ (bisection;
    # the median of per-query medians can sit below a rank whose recall is under 50 %)
    low, high = 1, target_pool
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if share(mid) >= 0.5 else (mid + 1, high)
    out["median_rank"] = float(low)
    return out
