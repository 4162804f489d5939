"""`capsearch search TEXT`: query the gateway."""

from __future__ import annotations

import argparse

from capsearch.client import CapsearchClient
from shared.config import get_settings
from shared.schemas import SearchResults


def print_results(results: SearchResults) -> None:
    if not results.results:
        print("  (no results)")
    for rank, hit in enumerate(results.results, 1):
        print(f"{rank:>3}. {hit.score:6.3f}  {hit.filename}  — {hit.caption or ''}")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.url or settings.url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    with CapsearchClient(url, api_key=key) as client:
        results = client.search(args.query, k=args.k, min_score=args.min_score)
    if args.json:
        print(results.model_dump_json())
    else:
        print_results(results)
    return 0
