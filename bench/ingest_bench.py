"""Ingest throughput end to end: upload accepted → every image indexed.

Embedded mode (default): one process, a cold temporary data dir, the default captioner; the
per-stage seconds come from the pipeline's own stage histogram in this process. With --stack:
the four services as processes against Postgres, a private Redis and an S3 server, the
per-stage seconds scraped from the caption worker's /metrics.

    python bench/ingest_bench.py --images ../shared/data/flickr8k-dev/images [--json]
    python bench/ingest_bench.py --images DIR --stack [--json]
    python bench/ingest_bench.py --images DIR --compare tags transformer --rounds 2 [--json]

--compare runs the embedded bench once per captioner per round, interleaved (A B A B: the
machine's load drifts alike for both), each in a fresh process with CAPSEARCH_CAPTIONER set,
and reports each captioner's median images/s and their ratio to the first.

With --json the LAST line is one JSON object: images, seconds, img_per_s, peak_rss_mb, stages,
machine (CPU model, kernel flags, cores, load) and, embedded, cpu_s (the process's CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, machine_line, print_figures  # noqa: E402

from capsearch.client import CapsearchClient  # noqa: E402
from capsearch.commands.ingest import upload_all, wait_all  # noqa: E402
from capsearch.files import find_images  # noqa: E402

STAGES = ("read", "decode", "caption", "encode", "store", "index")


def stage_sums_from_text(metrics_text: str) -> dict[str, float]:
    """`capsearch_stage_duration_seconds_sum{stage="x"} v` lines → {x: v}."""
    sums: dict[str, float] = {}
    pattern = re.compile(r'^capsearch_stage_duration_seconds_sum\{stage="([^"]+)"\} (\S+)$')
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if match:
            sums[match.group(1)] = float(match.group(2))
    return sums


def local_stage_sums() -> dict[str, float]:
    from prometheus_client import REGISTRY, generate_latest

    return stage_sums_from_text(generate_latest(REGISTRY).decode())


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_ingest(client: CapsearchClient, files: list[Path], batch: int) -> float:
    start = time.perf_counter()
    items = upload_all(client, files, batch=batch)
    final = wait_all(client, [i.id for i in items])
    seconds = time.perf_counter() - start
    failed = [r for r in final.values() if r.status != "indexed"]
    if failed:
        raise SystemExit(f"{len(failed)} images did not index, e.g. {failed[0].error}")
    return seconds


def bench_embedded(files: list[Path], batch: int) -> tuple[float, float, dict[str, float]]:
    from capsearch.embedded import embedded_client
    from shared.config import get_settings

    with tempfile.TemporaryDirectory(prefix="capsearch-ingest-") as tmp:
        settings = get_settings().model_copy(update={
            "data_dir": Path(tmp), "blob_backend": "local", "database_url": None})
        with embedded_client(settings) as client:
            before = local_stage_sums()
            seconds = run_ingest(client, files, batch)
            after = local_stage_sums()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = {s: round(after.get(s, 0.0) - before.get(s, 0.0), 3) for s in STAGES}
    return seconds, peak, stages


def bench_stack(files: list[Path], batch: int) -> tuple[float, float, dict[str, float]]:
    import httpx

    from tests.support.faultstack import build_fault_stack
    from tests.support.s3server import start_s3_server

    pg = os.environ.get("CAPSEARCH_TEST_PG_ADMIN_URL",
                        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    with tempfile.TemporaryDirectory(prefix="capsearch-ingest-stack-") as tmp:
        work = Path(tmp)
        s3 = start_s3_server(work / "s3")
        stack = build_fault_stack(pg_admin_url=pg, s3=s3, work_dir=work / "stack")
        try:
            port = stack.settings.worker_metrics_port
            with stack.client(timeout=300) as client:
                seconds = run_ingest(client, files, batch)
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            peak = sum(vm_hwm_mb(p.pid) for p in stack.procs.values())
        finally:
            stack.close()
            s3.stop()
    sums = stage_sums_from_text(text)
    return seconds, peak, {s: round(sums.get(s, 0.0), 3) for s in STAGES}


def compare(args: argparse.Namespace) -> int:
    """Interleaved embedded runs of each captioner (see the module docstring)."""
    import statistics
    import subprocess

    runs: dict[str, list[dict[str, object]]] = {c: [] for c in args.compare}
    cmd = [sys.executable, __file__, "--images", str(args.images), "--batch", str(args.batch),
           "--json"] + (["--limit", str(args.limit)] if args.limit else [])
    for round_ in range(1, args.rounds + 1):
        for captioner in args.compare:
            out = subprocess.run(cmd, env=os.environ | {"CAPSEARCH_CAPTIONER": captioner},
                                 check=True, capture_output=True, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            runs[captioner].append(run)
            print(f"round {round_}, {captioner}: {run['img_per_s']} images/s, "
                  f"cpu {run['cpu_s']} s, stages {run['stages']}", flush=True)
    first = args.compare[0]
    rates = {c: statistics.median(float(r["img_per_s"]) for r in rs)  # type: ignore[arg-type]
             for c, rs in runs.items()}
    result = {"images": runs[first][0]["images"], "rounds": args.rounds,
              "img_per_s": rates,
              "ratio_to_first": {c: round(v / rates[first], 3) for c, v in rates.items()},
              "runs": runs, "machine": describe_machine()}
    print(", ".join(f"{c} {v:.2f} images/s ({result['ratio_to_first'][c]:.2f}x {first})"
                    for c, v in rates.items()))
    print_figures(result, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--batch", type=int, default=32, help="files per upload request")
    parser.add_argument("--stack", action="store_true", help="the multi-process stack")
    parser.add_argument("--compare", nargs="+", metavar="CAPTIONER", default=None,
                        help="embedded runs of these captioners, interleaved")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare: runs of each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.compare:
        print(machine_line(), file=sys.stderr, flush=True)
        return compare(args)

    files = find_images([args.images])[: args.limit]
    if not files:
        raise SystemExit(f"no images in {args.images}")
    bench = bench_stack if args.stack else bench_embedded
    print(machine_line(), file=sys.stderr, flush=True)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    seconds, peak, stages = bench(files, args.batch)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime
                                                         + cpu_before.ru_stime)
    result = {
        "images": len(files),
        "seconds": round(seconds, 2),
        "img_per_s": round(len(files) / seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "stages": stages,
        "machine": describe_machine(),
    }
    if not args.stack:  # the one process's CPU seconds, model loading included
        result["cpu_s"] = round(cpu_s, 2)
    mode = "stack (4 processes)" if args.stack else "embedded (1 process)"
    print(f"ingest, {mode}: {result['images']} images in {result['seconds']} s = "
          f"{result['img_per_s']} images/s end to end, peak RSS {result['peak_rss_mb']} MiB")
    print("stage seconds (summed over batches): "
          + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
