"""`capsearch doctor [--repair]`: find (and fix) what a crash left inconsistent;
`capsearch doctor --backfill-taken`: read the capture dates of photos stored before they were."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack

from capsearch.commands.args import settings_for
from capsearch.database import open_database
from shared.backfill_taken import BackfillReport, backfill_taken
from shared.blocking import BlockingIndex
from shared.config import Settings
from shared.consistency import DoctorDeps, DoctorReport, examine
from shared.shards import make_index_client
from shared.storage import make_blob_store

HOUR = 3600.0


def build_deps(settings: Settings, factory: object, stack: ExitStack) -> DoctorDeps:
    """Blob store and database always; queue and search service only in the stack."""
    queue = index = ocr = None
    if settings.queue_backend == "celery":
        from shared.celery_app import make_celery
        from shared.queue import CeleryCaptionQueue, ocr_queue

        app = make_celery(settings)
        queue = CeleryCaptionQueue(app, settings.caption_batch_size)
        ocr = ocr_queue(app, settings.ocr_batch_size) if settings.ocr else None
        index = BlockingIndex(make_index_client(settings))  # every shard, as the worker's
        stack.callback(index.close)
    return DoctorDeps(factory=factory, store=make_blob_store(settings),  # type: ignore[arg-type]
                      model=settings.embedding_model, thumbnail_px=settings.thumbnail_px,
                      queue=queue, index=index, ocr=settings.ocr, ocr_queue=ocr)


def print_report(report: DoctorReport, *, repair: bool) -> None:
    print(f"{'check':28s} {'found':>7s} {'repaired':>9s}  sample")
    for c in report.checks:
        sample = c.error and f"ERROR: {c.error}" or ", ".join(c.sample[:5])
        repaired = str(c.repaired) if repair else "-"
        print(f"{c.name:28s} {c.found:7d} {repaired:>9s}  {sample}")
    if report.ocr_waiting is not None:
        print(f"photos waiting for OCR (text in photos): {report.ocr_waiting}")


def run_backfill_taken(settings: Settings, *, as_json: bool) -> int:
    """Fill `taken_at` from the stored originals, a progress line per batch, counts last."""
    def progress(report: BackfillReport) -> None:
        print(f"backfill-taken: {report.line()}", file=sys.stderr, flush=True)

    with open_database(settings) as factory:
        report = backfill_taken(factory, make_blob_store(settings), on_progress=progress)
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"backfill-taken done: {report.line()}")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if args.backfill_taken:
        return run_backfill_taken(settings, as_json=args.json)
    with open_database(settings) as factory, ExitStack() as stack:
        deps = build_deps(settings, factory, stack)
        report = examine(deps, repair=args.repair, grace_s=args.grace,
                         stuck_after_s=args.stuck_after)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print_report(report, repair=args.repair)
        if settings.queue_backend != "celery":
            print("(embedded mode: unfinished images are re-queued when `capsearch serve` "
                  "starts)")
    return 0 if report.problems == 0 else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

    p = sub.add_parser("doctor", help="check blobs, rows and the index agree; --repair fixes")
    p.add_argument("--repair", action="store_true", help="fix what is found")
    p.add_argument("--backfill-taken", action="store_true",
                   help="read the EXIF capture date of photos stored without one (after "
                        "`capsearch db upgrade` from a version before capture dates)")
    p.add_argument("--grace", type=float, default=HOUR,
                   help="seconds a blob without a row is left alone (an upload in flight)")
    p.add_argument("--stuck-after", type=float, default=HOUR,
                   help="seconds after which a pending image counts as stuck")
    p.add_argument("--data-dir", type=Path, help="the embedded instance's state folder")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)
