"""Search latency while a folder is being ingested: queries go first, ingest does not stall.

One embedded instance (one process, a cold temporary data dir, the default captioner), seeded
with the photos that ship inside scikit-learn and scikit-image so there is something to find.
Then, in one run: single searches one after another while the instance is idle, and the same
searches while the folder is uploaded and captioned (`capsearch ingest`'s path: uploads of
`--batch` files, then waiting for every image to be indexed). A user's think time
(`--think-ms`) separates the searches, so the queries are a trickle, not a load test.

    python bench/search_under_ingest.py --images ../shared/data/flickr8k-dev/images [--json]

With --json the LAST line is one JSON object: idle_p50_ms, busy_p50_ms, busy_p99_ms,
ratio_p50 (busy / idle), img_per_s (the ingest rate during the test), and the run's details
(machine: CPU model, kernel flags, cores, load).
Compare img_per_s with `bench/ingest_bench.py` on the same machine, in the same hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from itertools import cycle, islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, machine_line, print_figures  # noqa: E402

from capsearch.client import CapsearchClient  # noqa: E402
from capsearch.commands.ingest import upload_all, wait_all  # noqa: E402
from capsearch.files import bundled_sample_photos, find_images  # noqa: E402

QUERIES = (
    "a dog running on the grass", "two children playing in the water", "a man riding a bike",
    "a girl in a pink dress", "people walking down a city street", "a black dog with a ball",
    "a climber on a rock face", "a surfer riding a wave", "a boy jumping into a pool",
    "a woman sitting on a bench", "a brown horse in a field", "a snowboarder in the air",
    "a cat sleeping on a sofa", "a red car parked outside", "a crowd at a concert",
    "a cup of coffee on a table",
)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timed_searches(client: CapsearchClient, queries: list[str], think_s: float,
                   until: threading.Event | None = None) -> list[float]:
    """Milliseconds per search, one at a time: every query once, or (with `until`) round the
    list until the event is set."""
    took: list[float] = []
    source = cycle(queries) if until is not None else iter(queries)
    for query in source:
        if until is not None and until.is_set():
            break
        start = time.perf_counter()
        client.search(query, k=10)
        took.append((time.perf_counter() - start) * 1000)
        time.sleep(think_s)
    return took


def ingest_in_background(client: CapsearchClient, files: list[Path], batch: int,
                         done: threading.Event, result: dict[str, float]) -> threading.Thread:
    def run() -> None:
        try:
            start = time.perf_counter()
            items = upload_all(client, files, batch=batch)
            final = wait_all(client, [i.id for i in items])
            result["seconds"] = time.perf_counter() - start
            result["failed"] = sum(r.status != "indexed" for r in final.values())
        finally:
            done.set()

    thread = threading.Thread(target=run, name="ingest", daemon=True)
    thread.start()
    return thread


def bench(files: list[Path], *, n_queries: int, think_s: float, batch: int,
          worker_nice: int | None) -> dict[str, object]:
    from capsearch.embedded import embedded_client
    from shared.config import get_settings

    queries = list(islice(cycle(QUERIES), n_queries))
    with tempfile.TemporaryDirectory(prefix="capsearch-search-ingest-") as tmp:
        updates: dict[str, object] = {"data_dir": Path(tmp), "blob_backend": "local",
                                      "database_url": None}
        settings = get_settings()
        # this measures CPU, not the per-client request limit
        updates["rate_limit"] = settings.rate_limit.model_copy(update={"enabled": False})
        if worker_nice is not None:
            updates["worker_nice"] = worker_nice
        settings = settings.model_copy(update=updates)
        with embedded_client(settings) as client:
            seed = bundled_sample_photos()
            wait_all(client, [i.id for i in client.upload(seed, source="seed")], desc="seed")
            timed_searches(client, queries[:5], 0.0)  # warm: first-call costs out of the way
            idle = timed_searches(client, queries, think_s)
            done, outcome = threading.Event(), {}
            ingest = ingest_in_background(client, files, batch, done, outcome)
            busy = timed_searches(client, queries, think_s, until=done)
            ingest.join()
    if "seconds" not in outcome:
        raise SystemExit("the ingest did not finish")
    if outcome["failed"]:
        raise SystemExit(f"{outcome['failed']:.0f} images did not index")
    idle_p50, busy_p50 = percentile(idle, 50), percentile(busy, 50)
    return {
        "idle_p50_ms": round(idle_p50, 1), "idle_p99_ms": round(percentile(idle, 99), 1),
        "busy_p50_ms": round(busy_p50, 1), "busy_p99_ms": round(percentile(busy, 99), 1),
        "ratio_p50": round(busy_p50 / idle_p50, 2),
        "img_per_s": round(len(files) / outcome["seconds"], 2),
        "images": len(files), "ingest_seconds": round(outcome["seconds"], 2),
        "idle_searches": len(idle), "busy_searches": len(busy),
        "think_ms": round(think_s * 1000), "worker_nice": settings.worker_nice,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "machine": describe_machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--queries", type=int, default=40, help="searches in the idle phase")
    parser.add_argument("--think-ms", type=float, default=500.0,
                        help="pause between two searches")
    parser.add_argument("--batch", type=int, default=32, help="files per upload request")
    parser.add_argument("--worker-nice", type=int, default=None,
                        help="override CAPSEARCH_WORKER_NICE (0: the worker at the server's "
                             "priority, for comparison)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    files = find_images([args.images])[: args.limit]
    if not files:
        raise SystemExit(f"no images in {args.images}")
    print(machine_line(), file=sys.stderr, flush=True)
    result = bench(files, n_queries=args.queries, think_s=args.think_ms / 1000,
                   batch=args.batch, worker_nice=args.worker_nice)
    print(f"search while idle: p50 {result['idle_p50_ms']} ms, p99 {result['idle_p99_ms']} ms "
          f"({result['idle_searches']} searches)")
    print(f"search while ingesting: p50 {result['busy_p50_ms']} ms, p99 "
          f"{result['busy_p99_ms']} ms ({result['busy_searches']} searches), "
          f"p50 ratio {result['ratio_p50']}")
    print(f"ingest meanwhile: {result['images']} images in {result['ingest_seconds']} s = "
          f"{result['img_per_s']} images/s (worker nice {result['worker_nice']})")
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
