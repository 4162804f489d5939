"""Query latency through the gateway at N indexed vectors, C concurrent clients.

Fills a scratch Postgres database with N caption vectors (real MiniLM vectors of the shared
data's captions, repeated with noise; no captioning; one binary COPY), starts encoder, search
and gateway as separate processes, fits the IVF index when N is past the exact-search
threshold, then drives `GET /v1/search` over HTTP with C concurrent clients for a fixed number
of queries.

The queries are drawn (seeded, with replacement) from every distinct human caption of
flickr8k-dev and flickr8k-text-only-captions.tsv (~38,000 texts), so the gateway's query-vector
cache sees only the repeats such a draw makes (~2.5 % at 2,000 queries): nearly every query
pays for its encoding. The hit rate the gateway counted is printed on stderr.

Each client is one keep-alive HTTP/1.1 connection driven by a minimal asyncio client (the load
generator shares the cores with the services it measures: httpx cost ~2 ms of CPU a query).

    python bench/query_bench.py --n 1000000 --concurrency 8 [--queries 2000] [--json]

With --json the LAST line is one JSON object: n, concurrency, p50_ms, p95_ms, p99_ms, qps,
errors (with --cpu: cpu_ms_per_query by process), machine (CPU model, kernel flags, cores,
load). Drops its database afterwards.
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
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from index_load_bench import fill  # noqa: E402
from machine import describe_machine, machine_line, print_figures  # noqa: E402

from capsearch.files import read_captions  # noqa: E402
from capsearch.server import free_port  # noqa: E402
from capsearch.stack import start_stack, stop_stack  # noqa: E402
from shared.config import settings_from_env  # noqa: E402
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


def query_texts(datasets: Path) -> list[str]:
    """Every distinct human caption of Flickr8k here (the dev split and the text-only file),
    in a stable order; falls back to `caption_texts` when neither file is present."""
    texts: list[str] = []
    for tsv in (datasets / "flickr8k-dev" / "captions.tsv",
                datasets / "flickr8k-text-only-captions.tsv"):
        if tsv.is_file():
            texts += [c for cs in read_captions(tsv).values() for c in cs]
    return list(dict.fromkeys(texts or caption_texts(datasets)))


def base_vectors(texts: list[str]) -> np.ndarray:
    from services.encoder.encoder import BertTextEncoder

    encoder = BertTextEncoder(precision="auto")
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


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that GETs and reads a Content-Length or chunked body.

    A load generator, not a general client: it costs a fraction of httpx's CPU per request,
    which matters when it shares two cores with the services it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          "Accept: application/json\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def drive(url: str, queries: list[str], concurrency: int, k: int, timeout: float = 30.0
                ) -> tuple[list[float], int, float]:
    """C workers, one connection each, pull queries off one list; returns latencies (ms),
    errors (not 200, no results, or a transport failure) and wall seconds."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    next_query = iter(queries)

    async def worker() -> None:
        nonlocal errors
        conn = HttpConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            for q in next_query:
                target = "/v1/search?" + urlencode({"q": q, "k": k})
                start = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(conn.get(target), timeout)
                    ok = status == 200 and len(json.loads(body)["results"]) > 0
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        TimeoutError, ValueError, KeyError):
                    ok = False
                    await conn.close()
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def cache_counts(url: str) -> dict[str, float]:
    """The gateway's query-vector cache hits and misses so far (from its /metrics)."""
    counts = {"hit": 0.0, "miss": 0.0}
    try:
        text_ = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return counts
    for line in text_.splitlines():
        if line.startswith("capsearch_query_vector_cache_total{"):
            for result in counts:
                if f'result="{result}"' in line:
                    counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> tuple[dict[int, tuple[str, float]], float]:
    """(pid → (command, CPU seconds so far)) for every process readable here, and the whole
    machine's busy CPU seconds (all of /proc/stat's cpu line except idle and iowait)."""
    procs: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        procs[int(entry)] = (comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    busy = sum(values) - values[3] - values[4]
    return procs, busy / CLOCK_TICKS


def cpu_by_process(before: tuple[dict[int, tuple[str, float]], float],
                   after: tuple[dict[int, tuple[str, float]], float],
                   names: dict[int, str], queries: int) -> dict[str, float]:
    """Milliseconds of CPU per query by process group (our services by name, this bench as
    `client`, everything else by command name, e.g. postgres), plus `machine` (all busy CPU,
    kernel and processes that ended included) and `unattributed` (machine minus the rest)."""
    out: dict[str, float] = {}
    for pid, (comm, seconds) in after[0].items():
        spent = seconds - before[0].get(pid, (comm, 0.0))[1]
        if spent <= 0:
            continue
        group = names.get(pid) or ("client" if pid == os.getpid() else comm)
        out[group] = out.get(group, 0.0) + spent
    total = after[1] - before[1]
    result = {k: round(v * 1000 / queries, 2) for k, v in
              sorted(out.items(), key=lambda kv: -kv[1]) if v * 1000 / queries >= 0.05}
    result["machine"] = round(total * 1000 / queries, 2)
    result["unattributed"] = round((total - sum(out.values())) * 1000 / queries, 2)
    return result


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
    parser.add_argument("--cpu", action="store_true",
                        help="also report CPU milliseconds per query by process (from /proc)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    datasets = Path(os.environ.get("CAPSEARCH_DATASETS_DIR", ROOT.parent / "shared" / "data"))
    texts = caption_texts(datasets)
    pool = query_texts(datasets)
    rng = np.random.default_rng(1)
    warmup = [pool[i] for i in rng.integers(0, len(pool), 50)]
    queries = [pool[i] for i in rng.integers(0, len(pool), args.queries)]
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
    cpu: dict[str, float] | None = None
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
            settings = settings_from_env(env)
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
            asyncio.run(drive(settings.url, warmup, args.concurrency, args.k))  # warm up
            before = cache_counts(settings.url)
            cpu_before = cpu_snapshot()
            latencies, errors, wall = asyncio.run(
                drive(settings.url, queries, args.concurrency, args.k))
            cpu_after = cpu_snapshot()
            after = cache_counts(settings.url)
            if args.cpu:
                cpu = cpu_by_process(cpu_before, cpu_after,
                                     {p.pid: p.name for p in procs}, len(queries))
                print(f"CPU ms per query: {cpu}", file=sys.stderr)
            hits, misses = (after[r] - before[r] for r in ("hit", "miss"))
            print(f"queries: {len(queries)} drawn from {len(pool):,} distinct captions "
                  f"({len(set(queries))} distinct); gateway query-vector cache: "
                  f"{hits:.0f} hits, {misses:.0f} misses "
                  f"({hits / max(1.0, hits + misses):.1%} hit rate)", file=sys.stderr)
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
    if cpu is not None:
        result["cpu_ms_per_query"] = cpu
    result["machine"] = describe_machine()
    print(machine_line(), file=sys.stderr)
    print(f"N={args.n:,} concurrency {args.concurrency}: {len(latencies)} queries, "
          f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, "
          f"{result['qps']} queries/s, {errors} errors")
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
