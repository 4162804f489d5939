"""`capsearch duplicates`: list the near-duplicate groups (`GET /v1/duplicates`)."""

from __future__ import annotations

import argparse
import json

from capsearch.client import CapsearchClient
from shared.config import get_settings


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.url or settings.url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    with CapsearchClient(url, api_key=key) as client:
        groups = list(client.all_duplicates()) if args.all else \
            client.duplicates(limit=args.limit).groups
    if args.json:
        print(json.dumps({"groups": [g.model_dump() for g in groups]}))
        return 0
    if not groups:
        print("no near-duplicates")
    for group in groups:
        print(f"{group.score:.3f}  " + " ".join(str(i) for i in group.ids))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("duplicates", help="list groups of near-duplicate photos")
    p.add_argument("--limit", type=int, default=50, help="groups on the first page")
    p.add_argument("--all", action="store_true", help="every group, page after page")
    p.add_argument("--url", default=None, help="gateway URL (default: CAPSEARCH_URL)")
    p.add_argument("--json", action="store_true", help='print {"groups": [...]}')
    p.set_defaults(func=run)
