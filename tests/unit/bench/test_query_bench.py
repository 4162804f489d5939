"""bench/query_bench.py's load generator and query set (the bench itself runs in integration)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def qb() -> ModuleType:
    spec = importlib.util.spec_from_file_location("query_bench", ROOT / "bench" / "query_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["query_bench"] = module
    spec.loader.exec_module(module)
    return module


async def serve(responses: list[bytes]) -> tuple[asyncio.Server, int, list[bytes]]:
    """A server that answers each request line with the next canned response."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while responses:
            try:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            writer.write(responses.pop(0))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], requests


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def test_one_connection_reads_length_and_chunked_bodies(qb: ModuleType) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    async def main() -> list[tuple[int, bytes]]:
        server, port, requests = await serve([ok(b"hello"), chunked, ok(b"")])
        async with server:
            conn = qb.HttpConnection("127.0.0.1", port)
            got = [await conn.get("/a"), await conn.get("/b?q=x"), await conn.get("/c")]
            await conn.close()
        assert [r.split(b" ")[1] for r in requests] == [b"/a", b"/b?q=x", b"/c"]
        return got

    assert asyncio.run(main()) == [(200, b"hello"), (200, b"abcde"), (200, b"")]


def test_drive_counts_non_200_and_empty_results_as_errors(qb: ModuleType) -> None:
    good = ok(json.dumps({"results": [{"id": 1}]}).encode())
    empty = ok(json.dumps({"results": []}).encode())
    failed = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"

    async def main() -> tuple[list[float], int, float]:
        server, port, requests = await serve([good, empty, failed, good])
        async with server:
            result = await qb.drive(f"http://127.0.0.1:{port}", ["a dog", "b", "c", "d"], 1, 5)
        assert requests[0].startswith(b"GET /v1/search?q=a+dog&k=5 HTTP/1.1\r\n")
        return result

    latencies, errors, wall = asyncio.run(main())
    assert len(latencies) == 4 and errors == 2 and wall > 0


def test_a_dead_server_is_an_error_not_a_crash(qb: ModuleType) -> None:
    async def main() -> tuple[list[float], int, float]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await qb.drive(f"http://127.0.0.1:{port}", ["a", "b"], 2, 5, timeout=5)

    latencies, errors, _ = asyncio.run(main())
    assert len(latencies) == 2 and errors == 2


def test_the_query_set_is_every_distinct_flickr_caption(qb: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "flickr8k-dev").mkdir()
    (tmp_path / "flickr8k-dev" / "captions.tsv").write_text(
        "image\tcaption\na.jpg\tA dog .\na.jpg\tA cat .\nb.jpg\tA dog .\n")
    (tmp_path / "flickr8k-text-only-captions.tsv").write_text(
        "image\tcaption\nc.jpg\tA cat .\nc.jpg\tA red car .\n")
    assert qb.query_texts(tmp_path) == ["A dog .", "A cat .", "A red car ."]


def test_cpu_accounting_charges_each_process_by_group(qb: ModuleType) -> None:
    """`--cpu`: CPU ms per query per process group from two /proc snapshots."""
    import os
    import time

    before = qb.cpu_snapshot()
    assert os.getpid() in before[0] and before[1] > 0
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn 50 ms of this process's CPU
        pass
    after = qb.cpu_snapshot()
    per_query = qb.cpu_by_process(before, after, {}, queries=10)
    assert per_query["client"] >= 4.0  # ≥ 50 ms over 10 queries, charged to this process
    assert per_query["machine"] >= per_query["client"] - 1.0  # tick rounding
    # a process named by the bench is charged under its service name
    named = qb.cpu_by_process(before, after, {os.getpid(): "gateway"}, queries=10)
    assert named["gateway"] == per_query["client"] and "client" not in named
