"""`capsearch demo [FOLDER]`: the quickstart — index photos in embedded mode, run queries."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from capsearch.commands.ingest import upload_all, wait_all
from capsearch.commands.search import print_results
from capsearch.embedded import embedded_client
from capsearch.files import bundled_sample_photos, find_images
from shared.config import Settings, get_settings
from shared.logging import configure_logging

COCO_QUERIES = [
    "a man riding a horse",
    "a plate of food on a table",
    "a bus parked on a city street",
    "people playing with a frisbee in a park",
    "a cat sitting on a couch",
]
SAMPLE_QUERIES = ["a cat", "a cup of coffee", "a rocket launch", "a motorcycle", "flowers"]


def pick_photos(folder: Path | None, settings: Settings) -> tuple[list[Path], list[str], str]:
    """The folder asked for; else coco-mini-val from the datasets dir; else bundled photos."""
    if folder is not None:
        return find_images([folder]), COCO_QUERIES, str(folder)
    coco = settings.datasets_dir / "coco-mini-val" / "images"
    if coco.is_dir():
        return find_images([coco]), COCO_QUERIES, str(coco)
    return bundled_sample_photos(), SAMPLE_QUERIES, "sample photos bundled with scikit-learn/-image"


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    configure_logging("WARNING", json_logs=False)
    photos, queries, where = pick_photos(args.folder, base)
    if not photos:
        raise FileNotFoundError(f"no photos found in {where}")
    queries = args.queries or queries
    with tempfile.TemporaryDirectory(prefix="capsearch-demo-") as tmp:
        data_dir = args.data_dir.resolve() if args.data_dir else Path(tmp)
        settings = base.model_copy(update={"data_dir": data_dir, "blob_backend": "local",
                                           "database_url": None})
        print(f"capsearch demo: indexing {len(photos)} photos from {where}")
        print(f"(embedded mode: data in {data_dir}, captioner '{settings.captioner}')")
        with embedded_client(settings) as client:
            items = upload_all(client, photos, batch=16)
            final = wait_all(client, [i.id for i in items])
            failed = [r for r in final.values() if r.status == "failed"]
            print(f"indexed {len(final) - len(failed)} photos, {len(failed)} failed")
            for query in queries:
                print(f"\nquery: {query!r}")
                print_results(client.search(query, k=3))
    return 0
