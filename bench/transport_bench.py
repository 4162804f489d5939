"""Client CPU per internal request: httpx's default transport against LeanAsyncTransport.

    python bench/transport_bench.py                    # 3,000 sequential POSTs per transport
    python bench/transport_bench.py --n 1000 --json    # the last line is one JSON object

A uvicorn server in its own process answers every POST with a ~2.8 KB JSON body (a 384-float
vector, as the encoder does); the client sends a search-sized JSON body with the gateway's
headers, one request at a time, through `httpx.AsyncClient` with (a) its default transport and
(b) `LeanAsyncTransport`, and (c) as the gateway's clients now call: `LeanAsyncTransport` without
AsyncClient (`shared.clients._AsyncService`). Rounds alternate between
them so that a neighbour's load hits all alike. Reported per request: client-process CPU
(`time.process_time`, what the gateway pays; it includes the kernel's loopback send) and wall
time (which includes the server's share).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from shared.clients import _AsyncService
from shared.transport import LeanAsyncTransport

VECTOR = [round(math.sin(i), 3) for i in range(384)]
RESPONSE = json.dumps({"model": "bench", "dim": 384, "vectors": [VECTOR]}).encode()
REQUEST = json.dumps({"vector": VECTOR, "k": 10, "nprobe": None}).encode()
HEADERS = {"Content-Type": "application/json", "X-Request-ID": "0123456789abcdef",
           "X-Service-Token": "bench-service-token"}
WARMUP = 200


async def vector_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                     send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A bare ASGI app (no framework: the server's CPU is not what is measured)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(RESPONSE)).encode())]})
    await send({"type": "http.response.body", "body": RESPONSE})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(vector_app, host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="off")


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the bench server did not start")


Send = Callable[[], Awaitable[httpx.Response]]


async def run_requests(send: Send, n: int) -> tuple[float, float]:
    """CPU and wall seconds of n sequential POSTs."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        resp = await send()
        if resp.status_code != 200 or len(resp.content) != len(RESPONSE):
            raise RuntimeError(f"bad answer: {resp.status_code}, {len(resp.content)} bytes")
    return time.process_time() - cpu, time.perf_counter() - wall


def senders(url: str) -> tuple[dict[str, Send], list[Any]]:
    """(a) httpx's default transport, (b) the lean one under `httpx.AsyncClient`, and (c) the
    way the gateway's clients call now: a fresh `httpx.Request` per call handed straight to
    the lean transport (`shared.clients._AsyncService`); (b) − (c) is AsyncClient's own work."""
    default = httpx.AsyncClient(timeout=30.0)
    lean = httpx.AsyncClient(timeout=30.0, transport=LeanAsyncTransport())
    base, path = url.rsplit("/v1/", 1)
    direct = _AsyncService("bench", base, 30.0, None, HEADERS["X-Service-Token"])
    return ({"httpx": lambda: default.post(url, content=REQUEST, headers=HEADERS),
             "lean": lambda: lean.post(url, content=REQUEST, headers=HEADERS),
             "clients": lambda: direct.call("POST", "/v1/" + path, content=REQUEST)},
            [default, lean, direct])


async def bench(url: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    sends, closables = senders(url)
    totals = {name: [0.0, 0.0] for name in sends}
    for send in sends.values():
        await run_requests(send, WARMUP)
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, send in sends.items():
            cpu, wall = await run_requests(send, per_round)
            totals[name][0] += cpu
            totals[name][1] += wall
    for closable in closables:
        await closable.aclose()
    done = per_round * rounds
    return {name: {"cpu_us": cpu / done * 1e6, "wall_us": wall / done * 1e6}
            for name, (cpu, wall) in totals.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000, help="requests per transport")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="the client's event loop (the gateway runs on uvloop)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    proc, port = start_server()
    try:
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(bench(f"http://127.0.0.1:{port}/v1/encode", args.n,
                                      args.rounds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    n = max(1, args.n // args.rounds) * args.rounds
    print(f"{n} sequential POSTs per transport, {len(REQUEST)} B up, {len(RESPONSE)} B down, "
          f"client loop {args.loop}")
    print(f"{'transport':<10} {'client CPU us/req':>18} {'wall us/req':>12}")
    for name, row in result.items():
        print(f"{name:<10} {row['cpu_us']:>18.1f} {row['wall_us']:>12.1f}")
    print("(clients: the lean transport without httpx.AsyncClient, as shared/clients.py calls)")
    cpu_ratio = result["httpx"]["cpu_us"] / result["lean"]["cpu_us"]
    print(f"client CPU: lean takes {1 / cpu_ratio:.0%} of httpx's ({cpu_ratio:.1f}x less)")
    if args.json:
        flat = {f"{name.replace('-', '_')}_{k}": round(v, 1)
                for name, row in result.items() for k, v in row.items()}
        print(json.dumps({"n": n, "loop": args.loop, **flat, "cpu_ratio": round(cpu_ratio, 2)}))


if __name__ == "__main__":
    main()
