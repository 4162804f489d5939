"""Our PCA + K-means IVF index against faiss-cpu IndexIVFFlat: recall@10, QPS, build, memory.

    python bench/search_bench.py                     # 1,000,000 x 384 synthetic vectors
    python bench/search_bench.py --n 200000 --json   # the last line is one JSON object
    python bench/search_bench.py --vectors real.npy  # real (caption) vectors, (n, dim) float32

Both indexes get the same vectors, the same K (about 4*sqrt(N)), the same number of K-means
training points and iterations, the same queries and the same thread count (single-query QPS
with 1 thread each, batched QPS with --batch-threads each). nprobe is swept for both; each is
reported at its smallest nprobe whose recall@10 against exact search reaches --recall (0.95).
faiss-cpu is a bench-only extra: `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from services.search.index import build_ivf, default_n_clusters
from services.search.quantizer import (
    FULL_SPACE_ITERS,
    KMEANS_MAX_ITER,
    KMEANS_POINTS_PER_CLUSTER,
)

NPROBES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 160,
           192, 256)
FAISS_KMEANS_ITER = 20
SearchOne = Callable[[NDArray[np.float32], int, int], NDArray[np.int64]]
SearchMany = Callable[[NDArray[np.float32], int, int], NDArray[np.int64]]


# ---- data ------------------------------------------------------------------------------------


def embedding_like(n: int, dim: int, *, seed: int = 0, topic_size: int = 100
                   ) -> NDArray[np.float32]:
    """Unit vectors shaped like sentence embeddings: a shared offset (they are not centred),
    topics within themes, and a power-law spectrum of variation. The constants match MiniLM-L6
    vectors of 12,000 Flickr8k captions: mean-vector norm 0.29, 74% of the variance in 64 PCA
    axes, mean cosine to the 10th / 100th neighbour 0.60 / 0.46 (synthetic: 0.28, 74%,
    0.63 / 0.47 at the same n)."""
    rng = np.random.default_rng(seed)
    n_topics = max(16, n // topic_size)
    n_themes = max(4, int(np.sqrt(n_topics)))
    spectrum = np.arange(1, dim + 1, dtype=np.float32) ** -0.45
    spectrum /= np.sqrt((spectrum**2).sum())  # a draw at scale s has norm about s
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    shaped = (basis * spectrum).T

    def draw(count: int, scale: float) -> NDArray[np.float32]:
        return (rng.standard_normal((count, dim), dtype=np.float32) @ shaped) * scale

    offset = draw(1, 1.0)[0]
    offset *= 0.32 / np.linalg.norm(offset)
    themes = draw(n_themes, 0.6)
    topics = themes[rng.integers(0, n_themes, n_topics)] + draw(n_topics, 0.7)
    out = np.empty((n, dim), dtype=np.float32)
    topic_of = rng.integers(0, n_topics, n)
    for start in range(0, n, 65_536):
        sel = topic_of[start:start + 65_536]
        x = offset + topics[sel] + draw(sel.shape[0], 0.9)
        out[start:start + sel.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def load_or_make(args: argparse.Namespace) -> tuple[NDArray[np.float32], NDArray[np.float32],
                                                        str]:
    """(base vectors, held-out query vectors, a description of the data)."""
    if args.vectors:
        x = np.load(args.vectors).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(x.shape[0])
        nq = min(args.queries, x.shape[0] // 10)
        return (np.ascontiguousarray(x[order[nq:nq + args.n]]),
                np.ascontiguousarray(x[order[:nq]]), f"real vectors from {args.vectors}")
    both = embedding_like(args.n + args.queries, args.dim, seed=args.seed)
    return both[: args.n], both[args.n:].copy(), "synthetic embedding-like (topics in themes)"


def exact_top_k(x: NDArray[np.float32], q: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    truth = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], 256):
        scores = q[start:start + 256] @ x.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        truth[start:start + 256] = np.take_along_axis(part, order, axis=1)
    return truth


def recall(found: NDArray[np.int64], truth: NDArray[np.int64]) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k
                          for f, t in zip(found, truth, strict=True)]))


def rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


# ---- measuring -------------------------------------------------------------------------------


@dataclass
class Point:
    nprobe: int
    recall: float
    qps: float
    p50_ms: float
    p99_ms: float


def sweep(name: str, one: SearchOne, q: NDArray[np.float32], truth: NDArray[np.int64], k: int,
          target: float, max_nprobe: int) -> tuple[list[Point], Point | None]:
    """Single-query recall and latency per nprobe, up to the first nprobe reaching target."""
    points: list[Point] = []
    for nprobe in (p for p in NPROBES if p <= max_nprobe):
        for v in q[:20]:  # warm caches and code paths
            one(v, k, nprobe)
        found = np.full((q.shape[0], k), -1, dtype=np.int64)
        lat = np.empty(q.shape[0])
        for j, v in enumerate(q):
            t0 = time.perf_counter()
            ids = one(v, k, nprobe)
            lat[j] = time.perf_counter() - t0
            found[j, : ids.shape[0]] = ids
        point = Point(nprobe, recall(found, truth), q.shape[0] / lat.sum(),
                      1e3 * float(np.percentile(lat, 50)), 1e3 * float(np.percentile(lat, 99)))
        points.append(point)
        print(f"  {name:6s} nprobe={nprobe:4d}  recall@{k}={point.recall:.4f}  "
              f"qps={point.qps:9.1f}  p50={point.p50_ms:6.3f} ms  p99={point.p99_ms:6.3f} ms",
              flush=True)
        if point.recall >= target:
            return points, point
    return points, None


def batched_qps(many: SearchMany, q: NDArray[np.float32], k: int, nprobe: int) -> float:
    many(q[:64], k, nprobe)
    t0 = time.perf_counter()
    many(q, k, nprobe)
    return q.shape[0] / (time.perf_counter() - t0)


# ---- the two indexes -------------------------------------------------------------------------


@dataclass
class Built:
    name: str
    one: SearchOne
    many: SearchMany
    build_s: float
    rss_bytes: int
    counted_bytes: int


def build_ours(x: NDArray[np.float32], k_lists: int, args: argparse.Namespace) -> Built:
    before = rss()
    t0 = time.perf_counter()
    with threadpool_limits(args.batch_threads):
        index = build_ivf(np.arange(x.shape[0]), x, n_clusters=k_lists, seed=args.seed,
                          pca_components=args.pca, storage=args.storage, rerank=args.rerank,
                          scan=args.scan)
    build_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # as the search service does after a load: no collector stalls on its objects

    def one(v: NDArray[np.float32], k: int, nprobe: int) -> NDArray[np.int64]:
        return index.search(v, k, nprobe)[0]

    def many(qs: NDArray[np.float32], k: int, nprobe: int) -> NDArray[np.int64]:
        return index.search_batch(qs, k, nprobe)[0]

    return Built("ours", one, many, build_s, rss() - before, index.nbytes)


def build_faiss(x: NDArray[np.float32], k_lists: int, args: argparse.Namespace) -> Built:
    import faiss

    faiss.omp_set_num_threads(args.batch_threads)
    before = rss()
    t0 = time.perf_counter()
    dim = x.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, k_lists, faiss.METRIC_INNER_PRODUCT)
    # the same training points as ours, and at least as many iterations (ours: PCA-space
    # ones plus full-space ones)
    index.cp.max_points_per_centroid = KMEANS_POINTS_PER_CLUSTER
    index.cp.min_points_per_centroid = 1
    index.cp.niter = max(FAISS_KMEANS_ITER, KMEANS_MAX_ITER + FULL_SPACE_ITERS)
    index.cp.seed = args.seed
    index.train(x)
    index.add(x)
    build_s = time.perf_counter() - t0
    counted = x.shape[0] * (dim * 4 + 8) + k_lists * dim * 4

    def one(v: NDArray[np.float32], k: int, nprobe: int) -> NDArray[np.int64]:
        index.nprobe = nprobe
        return index.search(v.reshape(1, -1), k)[1][0]

    def many(qs: NDArray[np.float32], k: int, nprobe: int) -> NDArray[np.int64]:
        index.nprobe = nprobe
        return index.search(qs, k)[1]

    return Built("faiss", one, many, build_s, rss() - before, counted)


def _single_threaded(built: Built, threads: int) -> None:
    if built.name == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)


def measure(built: Built, q: NDArray[np.float32], truth: NDArray[np.int64],
            args: argparse.Namespace, k_lists: int) -> dict[str, float | int | None]:
    _single_threaded(built, 1)
    with threadpool_limits(1):
        _, point = sweep(built.name, built.one, q, truth, args.k, args.recall, k_lists)
    _single_threaded(built, args.batch_threads)
    batch = None
    if point is not None:
        with threadpool_limits(args.batch_threads):
            batch = batched_qps(built.many, q, args.k, point.nprobe)
    return {"nprobe": point.nprobe if point else None, "recall": point.recall if point else None,
            "qps": point.qps if point else None, "p50_ms": point.p50_ms if point else None,
            "p99_ms": point.p99_ms if point else None, "batched_qps": batch,
            "build_s": built.build_s, "rss_bytes": built.rss_bytes,
            "counted_bytes": built.counted_bytes}


def head_to_head(builts: list[Built], results: dict[str, dict[str, float | int | None]],
                 q: NDArray[np.float32], k: int, rounds: int, chunk: int = 50) -> None:
    """Single-query QPS at each index's chosen nprobe, measured in chunks of queries that
    alternate between the indexes; each chunk's best of `rounds` passes counts. Other load on
    the machine then hits both alike, and least in their best passes."""
    best = {b.name: np.full((q.shape[0] + chunk - 1) // chunk, np.inf) for b in builts}
    for _ in range(rounds):
        for c, start in enumerate(range(0, q.shape[0], chunk)):
            for built in builts:
                nprobe = results[built.name]["nprobe"]
                if nprobe is None:
                    continue
                _single_threaded(built, 1)
                with threadpool_limits(1):
                    t0 = time.perf_counter()
                    for v in q[start:start + chunk]:
                        built.one(v, k, int(nprobe))
                    best[built.name][c] = min(best[built.name][c], time.perf_counter() - t0)
    for name, times in best.items():
        if np.isfinite(times).all():
            results[name]["qps"] = q.shape[0] / float(times.sum())
    summary = ", ".join(f"{n} {results[n]['qps'] or 0:.1f} qps" for n in best)
    print(f"head to head (best of {rounds} alternating passes per {chunk} queries): "
          f"{summary}", flush=True)


# ---- main ------------------------------------------------------------------------------------


def _fmt(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--recall", type=float, default=0.95, help="recall@k target")
    p.add_argument("--clusters", type=int, default=None, help="K (default about 4*sqrt(N))")
    p.add_argument("--pca", type=int, default=96, help="our PCA components")
    p.add_argument("--rerank", type=int, default=100,
                   help="our exact re-rank candidates (--scan pca)")
    p.add_argument("--scan", choices=["full", "pca"], default=None,
                   help="ours: score the probed lists' full vectors (default for float32) or "
                        "their PCA rows + re-rank (default for float16)")
    p.add_argument("--storage", choices=["float32", "float16"], default="float32")
    p.add_argument("--batch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--vectors", help="a .npy of real vectors instead of synthetic ones")
    p.add_argument("--no-faiss", action="store_true", help="measure ours only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="head-to-head QPS passes")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args()

    started = time.perf_counter()
    x, q, what = load_or_make(args)
    n, dim = x.shape
    k_lists = args.clusters or default_n_clusters(n)
    print(f"# search bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
          f"{os.cpu_count()} cpus, {what}")
    print(f"# n={n} dim={dim} queries={q.shape[0]} k={args.k} K={k_lists} pca={args.pca} "
          f"rerank={args.rerank} storage={args.storage} scan={args.scan or 'default'}",
          flush=True)
    with threadpool_limits(args.batch_threads):
        truth = exact_top_k(x, q, args.k)
    results: dict[str, dict[str, float | int | None]] = {}
    builders = [build_ours] + ([] if args.no_faiss else [build_faiss])
    builts = []
    for builder in builders:
        built = builder(x, k_lists, args)
        print(f"{built.name}: built in {built.build_s:.1f} s, rss +{built.rss_bytes / 2**20:.0f}"
              f" MiB, counted {built.counted_bytes / 2**20:.0f} MiB", flush=True)
        results[built.name] = measure(built, q, truth, args, k_lists)
        builts.append(built)
    head_to_head(builts, results, q, args.k, args.rounds)

    raw = n * dim * 4
    print(f"\n{'index':6s} {'nprobe':>6s} {'recall':>7s} {'qps(1t)':>9s} {'p50 ms':>7s} "
          f"{'p99 ms':>7s} {'batch qps':>10s} {'build s':>8s} {'rss/raw':>8s} {'B/vec':>7s}")
    for name, r in results.items():
        rss_b = int(r["rss_bytes"] or 0)
        print(f"{name:6s} {_fmt(r['nprobe'], '6d')} {_fmt(r['recall'], '7.4f')} "
              f"{_fmt(r['qps'], '9.1f')} {_fmt(r['p50_ms'], '7.3f')} {_fmt(r['p99_ms'], '7.3f')} "
              f"{_fmt(r['batched_qps'], '10.1f')} {_fmt(r['build_s'], '8.1f')} "
              f"{rss_b / raw:8.3f} {rss_b / n:7.0f}")
    ours, theirs = results["ours"], results.get("faiss", {})
    ratio = (ours["qps"] / theirs["qps"]) if ours.get("qps") and theirs.get("qps") else None
    print(f"qps ratio ours/faiss: {_fmt(ratio, '.2f')}; "
          f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps({
            "n": n, "dim": dim, "recall_at_10": ours["recall"], "qps": ours["qps"],
            "faiss_qps": theirs.get("qps"), "qps_ratio": ratio, "build_s": ours["build_s"],
            "mem_bytes_per_vector": int(ours["rss_bytes"] or 0) / n,
        }))


if __name__ == "__main__":
    main()
