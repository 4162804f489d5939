"""Retrieval quality of image vectors against caption queries, computed in memory.

The same figures as `capsearch eval retrieval` (R@1/5/10 in percent, median rank, every human
caption a query, its own photo the answer) for protocols that train and score many times.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

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
