"""Hybrid ranking sweep: index a folder once (embedded), then R@1/5/10 with hybrid off and
with reciprocal rank fusion at several text weights and depths, every human caption a query.

    python bench/hybrid_sweep.py ../shared/data/flickr8k-dev --weights 0.25 0.5 --depths 10 100

The official figures come from `capsearch eval retrieval --hybrid on|off` (docs/search.md);
this script only picks the weight without captioning the folder once per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from capsearch.client import CapsearchClient
from capsearch.commands.evaluate import rank_of, retrieval_metrics
from capsearch.commands.ingest import upload_all, wait_all
from capsearch.embedded import build_embedded
from capsearch.files import find_images, read_captions
from capsearch.server import BackgroundServer
from shared.config import get_settings
from shared.logging import configure_logging


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="a data set: images/ + captions.tsv")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--depths", type=int, nargs="+", default=[100],
                        help="text matches fused (ranking.depth)")
    args = parser.parse_args()
    configure_logging("WARNING")
    files = find_images([args.folder / "images"])
    captions = read_captions(args.folder / "captions.tsv")
    pool = len(files)
    with tempfile.TemporaryDirectory(prefix="capsearch-sweep-") as tmp:
        settings = get_settings().model_copy(update={
            "data_dir": Path(tmp), "database_url": None, "blob_backend": "local",
            "search_max_k": max(pool, 100),
            # one local client sending thousands of queries: not what the limiter is for
            "rate_limit": get_settings().rate_limit.model_copy(update={"enabled": False})})
        stack = build_embedded(settings)
        try:
            with BackgroundServer(stack.gateway_app()) as server, \
                    CapsearchClient(server.url) as client:
                items = upload_all(client, files, batch=32)
                wait_all(client, [i.id for i in items])
                ids = {f.name: i.id for f, i in zip(files, items, strict=True)}
                queries = [(ids[n], q) for n, qs in sorted(captions.items()) for q in qs
                           if n in ids]
                # the gateway reads these settings per request: flip them between passes
                passes = [(None, None)] + [(w, d) for w in args.weights for d in args.depths]
                for weight, depth in passes:
                    ranking = settings.ranking
                    ranking.hybrid = weight is not None
                    ranking.text_weight = weight or 0.0
                    ranking.depth = depth or 100

                    def one(item: tuple[int, str]) -> int:
                        return rank_of(client, item[1], item[0], pool)

                    with ThreadPoolExecutor(4) as ex:
                        ranks = list(ex.map(one, queries))
                    row = {"folder": args.folder.name, "hybrid": weight is not None,
                           "text_weight": weight, "depth": depth,
                           **retrieval_metrics(ranks, pool)}
                    print(json.dumps(row), flush=True)
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
