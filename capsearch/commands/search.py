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
        taken = f"  taken {hit.taken_at:%Y-%m-%d %H:%M}" if hit.taken_at else ""
        print(f"{rank:>3}. {hit.score:6.3f}  {hit.filename}{taken}  — {hit.caption or ''}")


def add_order_arguments(p: argparse.ArgumentParser) -> None:
    """--sort and the date filters (ISO dates or date-times; a `--*-to` date is inclusive)."""
    p.add_argument("--sort", choices=["relevance", "date", "taken"], default=None,
                   help="relevance (default), date (newest upload first) or taken (newest "
                        "capture first, photos without a capture date after)")
    p.add_argument("--taken-from", default=None, metavar="DATE",
                   help="only photos taken on or after this date (EXIF capture date)")
    p.add_argument("--taken-to", default=None, metavar="DATE",
                   help="only photos taken on or before this date")
    p.add_argument("--date-from", default=None, metavar="DATE",
                   help="only photos uploaded on or after this date")
    p.add_argument("--date-to", default=None, metavar="DATE",
                   help="only photos uploaded on or before this date")


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
            results = client.search(args.query, k=args.k, min_score=args.min_score,
                                    sort=args.sort, taken_from=args.taken_from,
                                    taken_to=args.taken_to, date_from=args.date_from,
                                    date_to=args.date_to)
    if args.json:
        print(results.model_dump_json())
    else:
        print_results(results)
    return 0
