"""`capsearch eval retrieval`: every human caption as a query; is its photo in the top K?"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from capsearch.client import CapsearchClient
from capsearch.commands.ingest import upload_all, wait_all
from capsearch.embedded import embedded_client
from capsearch.files import find_images, read_captions
from shared.config import get_settings
from shared.logging import configure_logging


def retrieval_metrics(ranks: list[int], pool: int) -> dict[str, float | int]:
    """R@1/5/10 in percent and the median rank (1 = best) over all queries."""
    n = len(ranks)
    return {
        "pool": pool,
        "queries": n,
        "r1": round(100.0 * sum(r <= 1 for r in ranks) / n, 2),
        "r5": round(100.0 * sum(r <= 5 for r in ranks) / n, 2),
        "r10": round(100.0 * sum(r <= 10 for r in ranks) / n, 2),
        "median_rank": float(statistics.median(ranks)),
    }


def rank_of(client: CapsearchClient, query: str, target: int, pool: int) -> int:
    """Where the target image lands for the query (pool + 1 when it is not returned)."""
    hits = client.search(query, k=pool).results
    for rank, hit in enumerate(hits, 1):
        if hit.id == target:
            return rank
    return pool + 1


def run_retrieval(args: argparse.Namespace) -> int:
    base = get_settings()
    configure_logging("WARNING", json_logs=False)
    captions = read_captions(args.captions)
    files = [p for p in find_images([args.images])]
    if not files:
        raise FileNotFoundError(f"no images in {args.images}")
    queries = [(name, c) for name, cs in sorted(captions.items()) for c in cs]
    if args.max_queries:
        queries = queries[: args.max_queries]
    pool = len(files)
    with tempfile.TemporaryDirectory(prefix="capsearch-eval-") as tmp:
        updates: dict[str, object] = {
            "data_dir": Path(tmp), "blob_backend": "local", "database_url": None,
            "search_max_k": max(pool, base.search_max_k),
        }
        if args.captioner:
            updates["captioner"] = args.captioner
        # a private loopback instance hammered by this one client: no rate limit
        updates["rate_limit"] = base.rate_limit.model_copy(update={"enabled": False})
        if getattr(args, "hybrid", None) is not None:  # keyword + vector fusion on/off
            updates["ranking"] = base.ranking.model_copy(update={"hybrid": args.hybrid == "on"})
        if getattr(args, "representation", None):
            updates["representation"] = args.representation
        settings = base.model_copy(update=updates)
        print(f"indexing {pool} photos from {args.images} with captioner "
              f"'{settings.captioner}', representation '{settings.representation}'",
              file=sys.stderr)
        with embedded_client(settings) as client:
            items = upload_all(client, files, batch=32)
            final = wait_all(client, [i.id for i in items])
            ids = {f.name: item.id for f, item in zip(files, items, strict=True)}
            failed = sum(r.status == "failed" for r in final.values())
            usable = [(ids[name], q) for name, q in queries if name in ids]
            if not usable:
                raise ValueError("no caption names an image of the folder")
            with ThreadPoolExecutor(4) as pool_exec, \
                    tqdm(total=len(usable), desc="queries", file=sys.stderr) as bar:
                def one(item: tuple[int, str]) -> int:
                    rank = rank_of(client, item[1], item[0], pool)
                    bar.update(1)
                    return rank

                ranks = list(pool_exec.map(one, usable))
    metrics = retrieval_metrics(ranks, pool)
    print(f"captioner {settings.captioner}, representation {settings.representation}, hybrid "
          f"{'on' if settings.ranking.hybrid else 'off'}: pool {pool} photos ({failed} failed), "
          f"{metrics['queries']} caption queries")
    print(f"R@1 {metrics['r1']:.1f}  R@5 {metrics['r5']:.1f}  R@10 {metrics['r10']:.1f}  "
          f"median rank {metrics['median_rank']:.0f}")
    if args.json:
        print(json.dumps(metrics))
    return 0
