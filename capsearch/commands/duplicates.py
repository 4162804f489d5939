"""`capsearch duplicates`: list the near-duplicate groups (`GET /v1/duplicates`);
`--backfill` gives photos indexed before near-duplicates existed their vectors and groups."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from capsearch.client import CapsearchClient
from capsearch.commands.args import settings_for
from capsearch.database import open_database
from shared.clients import NeighbourIndex
from shared.config import Settings, get_settings


def backfill(settings: Settings, *, batch_size: int) -> int:
    """Read the originals of photos without a duplicate vector, with progress on stderr. The
    stack's search service takes them into its duplicate index; in embedded mode run it
    while `capsearch serve` is stopped (the server loads the index at start)."""
    from services.caption.backfill import backfill_duplicates
    from shared.storage import make_blob_store

    with open_database(settings) as factory, ExitStack() as stack:
        index = _duplicate_index(settings, factory, stack)

        def progress(done: int, total: int) -> None:
            print(f"\rbackfill: {done}/{total} photos", end="", file=sys.stderr, flush=True)

        report = backfill_duplicates(settings=settings, session_factory=factory,
                                     store=make_blob_store(settings), index=index,
                                     batch_size=batch_size, progress=progress)
    print(file=sys.stderr)
    print(json.dumps({"done": report.done, "failed": len(report.failed),
                      "pairs": report.pairs}))
    return 0 if not report.failed else 1


def _duplicate_index(settings: Settings, factory: sessionmaker[Session], stack: ExitStack
                     ) -> NeighbourIndex:
    if settings.queue_backend == "celery":  # the stack: the search service's, every shard
        from shared.blocking import BlockingIndex
        from shared.shards import make_index_client

        index = BlockingIndex(make_index_client(settings, space="duplicates"))
        stack.callback(index.close)
        return index
    from services.search.service import IndexService
    from shared.db import EmbeddingKind
    from shared.duplicates import duplicate_vector_model

    local = IndexService(settings, factory, kind=EmbeddingKind.dup,
                         model=duplicate_vector_model(settings))
    local.load()
    return local


def run(args: argparse.Namespace) -> int:
    if args.backfill:
        return backfill(settings_for(args), batch_size=args.batch)
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
    p.add_argument("--backfill", action="store_true",
                   help="compute the duplicate vectors and groups of photos indexed before "
                        "near-duplicates existed (reads the originals; resumable)")
    p.add_argument("--batch", type=int, default=32, help="photos per --backfill CNN pass")
    p.add_argument("--data-dir", type=Path, help="the embedded instance's state folder")
    p.set_defaults(func=run)
