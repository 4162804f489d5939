"""`capsearch ingest PATH...`: upload photos through the API and wait until indexed."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from capsearch.client import CapsearchClient
from capsearch.files import find_images
from shared.config import get_settings
from shared.schemas import ImagePublic, UploadItem


def upload_all(client: CapsearchClient, files: list[Path], *, batch: int,
               desc: str = "upload") -> list[UploadItem]:
    """Upload files in batches with a progress bar; one item per file, in order."""
    items: list[UploadItem] = []
    with tqdm(total=len(files), desc=desc, unit="img", file=sys.stderr) as bar:
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            items.extend(client.upload(chunk, source=str(chunk[0].parent)))
            bar.update(len(chunk))
    return items


def wait_all(client: CapsearchClient, ids: list[int], *, desc: str = "index"
             ) -> dict[int, ImagePublic]:
    """Wait until every id is indexed or failed, with a progress bar."""
    with tqdm(total=len(set(ids)), desc=desc, unit="img", file=sys.stderr) as bar:
        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        return client.wait_indexed(ids, on_progress=progress)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "watch", False):
        from capsearch.commands.watch import run_watch

        return run_watch(args)
    settings = get_settings()
    url = args.url or settings.url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    files = find_images(args.paths)
    if not files:
        print("capsearch: no image files found", file=sys.stderr)
        return 1
    with CapsearchClient(url, api_key=key) as client:
        items = upload_all(client, files, batch=max(1, args.batch))
        dupes = sum(i.duplicate for i in items)
        if args.no_wait:
            print(f"accepted {len(items)} files ({dupes} already known)")
            return 0
        final = wait_all(client, [i.id for i in items])
    counts = Counter(r.status for r in final.values())
    print(f"{len(files)} files: {counts.get('indexed', 0)} indexed, "
          f"{counts.get('failed', 0)} failed, {dupes} were already known")
    for rec in final.values():
        if rec.status == "failed":
            print(f"  failed: {rec.filename}: {rec.error}")
    return 0 if not counts.get("failed") else 2
