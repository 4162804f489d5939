"""Query latency through the gateway at N indexed vectors, C concurrent clients.

Fills a scratch Postgres database with N caption vectors (real MiniLM vectors of the shared
data's captions, repeated with noise; no captioning), starts encoder, search and gateway as
separate processes, fits the IVF index when N is past the exact-search threshold, then drives
`GET /v1/search` over HTTP with C concurrent clients for a fixed number of queries.

    python bench/query_bench.py --n 1000000 --concurrency 8 [--queries 2000] [--json]

With --json the LAST line is one JSON object: n, concurrency, p50_ms, p95_ms, p99_ms, qps,
errors. Drops its database afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from index_load_bench import fill  # noqa: E402

from capsearch.files import read_captions  # noqa: E402
from capsearch.server import free_port  # noqa: E402
from capsearch.stack import start_stack, stop_stack  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.vectors import l2_normalize  # noqa: E402

TOKEN = "query-bench-service-token-0123456789abcdef"


def caption_texts(datasets: Path) -> list[str]:
    """Human captions of the shared data (queries and base vectors come from them)."""
    texts: list[str] = []
    for name in ("flickr8k-dev", "coco-mini-val", "coco-mini-train"):
        tsv = datasets / name / "captions.tsv"
        if tsv.is_file():
            texts += [c for cs in read_captions(tsv).values() for c in cs]
    if not texts:
        raise SystemExit(f"no captions.tsv under {datasets} (set CAPSEARCH_DATASETS_DIR)")
    return texts


def base_vectors(texts: list[str]) -> np.ndarray:
    from services.encoder.encoder import BertTextEncoder

    encoder = BertTextEncoder()
    return encoder.encode(texts)


def make_vectors(base: np.ndarray, n: int, *, noise: float = 0.05, seed: int = 0
                 ) -> np.ndarray:
    """n unit vectors: real caption vectors repeated, each with its own noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        rows = base[np.arange(start, stop) % len(base)]
        out[start:stop] = l2_normalize(
            rows + rng.normal(0, noise, rows.shape).astype(np.float32))
    return out


def settings_for(env: dict[str, str]) -> Settings:
    saved = os.environ.copy()
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def drive(url: str, queries: list[str], concurrency: int, k: int
                ) -> tuple[list[float], int, float]:
    """C workers pull queries off one list; returns latencies (ms), errors, wall seconds."""
    latencies: list[float] = []
    errors = 0
    next_query = iter(queries)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            for q in next_query:
                start = time.perf_counter()
                try:
                    resp = await client.get("/v1/search", params={"q": q, "k": k})
                    ok = resp.status_code == 200 and len(resp.json()["results"]) > 0
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--base", type=int, default=4000,
                        help="distinct real caption vectors the N vectors are made from")
    parser.add_argument("--admin-url", default=os.environ.get(
        "CAPSEARCH_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    datasets = Path(os.environ.get("CAPSEARCH_DATASETS_DIR", ROOT.parent / "shared" / "data"))
    texts = caption_texts(datasets)
    rng = np.random.default_rng(1)
    queries = [texts[i] for i in rng.integers(0, len(texts), args.queries)]
    t0 = time.perf_counter()
    vectors = make_vectors(base_vectors(texts[:args.base]), args.n)
    print(f"vectors: {args.n} x {vectors.shape[1]} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)

    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    db = f"capsearch_qbench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{db}"
    procs = []
    try:
        t0 = time.perf_counter()
        fill(url, vectors, "all-MiniLM-L6-v2")
        print(f"filled Postgres in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        del vectors
        with tempfile.TemporaryDirectory(prefix="capsearch-qbench-") as tmp:
            ports = {name: free_port() for name in ("gateway", "encoder", "search")}
            env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
            env.update({
                "CAPSEARCH_DATA_DIR": tmp, "CAPSEARCH_DATABASE_URL": url,
                "CAPSEARCH_BLOB_BACKEND": "local", "CAPSEARCH_QUEUE_BACKEND": "celery",
                "CAPSEARCH_AUTH__ENABLED": "false", "CAPSEARCH_RATE_LIMIT__ENABLED": "false",
                "CAPSEARCH_SERVICE_TOKEN": TOKEN, "CAPSEARCH_LOG_LEVEL": "WARNING",
                "CAPSEARCH_GATEWAY_PORT": str(ports["gateway"]),
                "CAPSEARCH_ENCODER_PORT": str(ports["encoder"]),
                "CAPSEARCH_SEARCH_PORT": str(ports["search"]),
                "CAPSEARCH_URL": f"http://127.0.0.1:{ports['gateway']}",
                "CAPSEARCH_ENCODER_URL": f"http://127.0.0.1:{ports['encoder']}",
                "CAPSEARCH_SEARCH_URL": f"http://127.0.0.1:{ports['search']}",
                "HF_HUB_OFFLINE": "1",
            })
            settings = settings_for(env)
            t0 = time.perf_counter()
            procs = start_stack(settings, env, Path(tmp) / "logs",
                                names=["encoder", "search", "gateway"], timeout=600)
            print(f"services ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            if args.n >= settings.index.exact_below:
                t0 = time.perf_counter()
                resp = httpx.post(f"{settings.search_url}/v1/index/rebuild",
                                  params={"wait": "true"}, timeout=1800,
                                  headers={"X-Service-Token": TOKEN})
                resp.raise_for_status()
                print(f"IVF rebuild: {resp.json()} in {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr)
            asyncio.run(drive(settings.url, queries[:50], args.concurrency, args.k))  # warm up
            latencies, errors, wall = asyncio.run(
                drive(settings.url, queries, args.concurrency, args.k))
    finally:
        stop_stack(procs)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

    result = {
        "n": args.n, "concurrency": args.concurrency,
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "qps": round(len(latencies) / wall, 1), "errors": errors,
    }
    print(f"N={args.n:,} concurrency {args.concurrency}: {len(latencies)} queries, "
          f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, "
          f"{result['qps']} queries/s, {errors} errors")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
