"""`capsearch search TEXT` or `capsearch search --similar-file PATH`: query the gateway."""

from __future__ import annotations

import argparse

from capsearch.client import CapsearchClient
from shared.config import get_settings
from shared.schemas import SearchResults, SimilarResults


def print_results(results: SearchResults | SimilarResults) -> None:
    if not results.results:
        print("  (no results)")
    for rank, hit in enumerate(results.results, 1):
        print(f"{rank:>3}. {hit.score:6.3f}  {hit.filename}  — {hit.caption or ''}")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.url or settings.url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if (args.query is None) == (args.similar_file is None):
        raise SystemExit("capsearch search: give a query or --similar-file PATH (one of them)")
    with CapsearchClient(url, api_key=key) as client:
        results: SearchResults | SimilarResults
        if args.similar_file is not None:
            results = client.similar(path=args.similar_file, k=args.k,
                                     min_score=args.min_score)
        else:
            results = client.search(args.query, k=args.k, min_score=args.min_score)
    if args.json:
        print(results.model_dump_json())
    else:
        print_results(results)
    return 0
