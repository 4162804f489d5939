"""LeanAsyncTransport against real local servers: uvicorn for the JSON path, raw asyncio servers
for what a well-behaved server never does on purpose (closing idle or half-answered
connections, never answering)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.transport import LeanAsyncTransport
from tests.support.asgiserver import serve_asgi
from tests.support.faults import free_port

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
Script = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Runs a coroutine on the stdlib loop and on uvloop (which the gateway runs on)."""
    factory = None
    if request.param == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    def run(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


def lean_client(**transport: Any) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=100,
                          max_keepalive_connections=transport.pop("max_idle", 20),
                          keepalive_expiry=transport.pop("expiry", 2.0))
    return httpx.AsyncClient(transport=LeanAsyncTransport(limits), **transport)


# ---- a raw asyncio server driven by a per-connection script ----------------------------------


class RawServer:
    """Runs `script(server, reader, writer)` per connection; counts connections, requests read
    and connections the client closed."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = self.closed_by_client = 0
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request (head and body), or None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
            return None
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        request = head + await reader.readexactly(int(length[1]) if length else 0)
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self.script(self, reader, writer)
        except asyncio.CancelledError:
            pass  # stopped by __aexit__ (asyncio logs a cancelled connection handler)
        finally:
            writer.close()


def ok(body: bytes = b"{}", *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def answer_all(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    while await server.read_request(reader) is not None:
        writer.write(ok(b'{"ok": true}'))


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---- against uvicorn ---------------------------------------------------------------------------


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": await request.json(), "headers": dict(request.headers)},
                            headers={"X-Answered-By": "echo"})

    @app.get("/status/{code}")
    async def status(code: int) -> JSONResponse:
        return JSONResponse({"error": {"code": "x", "message": f"status {code}"}},
                            status_code=code)

    return app


def test_a_json_post_round_trips_with_its_headers(run: Run[None]) -> None:
    async def main() -> None:
        async with serve_asgi(echo_app()) as url, lean_client(
                base_url=url, headers={"X-Service-Token": "t0k"}) as client:
            resp = await client.post("/echo", json={"vector": [0.5, -1.0]},
                                     headers={"X-Request-ID": "rid-1"})
        assert resp.status_code == 200 and resp.reason_phrase == "OK"
        assert resp.headers["x-answered-by"] == "echo"
        echoed = resp.json()
        assert echoed["body"] == {"vector": [0.5, -1.0]}
        assert echoed["headers"]["x-request-id"] == "rid-1"
        assert echoed["headers"]["x-service-token"] == "t0k"  # the client's default headers
        assert echoed["headers"]["content-type"] == "application/json"
        assert echoed["headers"]["host"] == url.removeprefix("http://")

    run(main())


@pytest.mark.parametrize("code", [404, 422, 500, 503])
def test_error_statuses_come_back_as_responses(run: Run[None], code: int) -> None:
    async def main() -> None:
        async with serve_asgi(echo_app()) as url, lean_client(base_url=url) as client:
            resp = await client.get(f"/status/{code}")
            assert resp.status_code == code
            assert resp.json()["error"]["message"] == f"status {code}"
            # and the connection still serves the next request
            assert (await client.post("/echo", json=[1])).json()["body"] == [1]

    run(main())


def test_a_connection_uvicorn_closed_after_its_keep_alive_is_replaced(run: Run[None]) -> None:
    async def main() -> None:
        # the server drops idle connections after 0.1 s, long before the client's expiry
        async with serve_asgi(echo_app(), timeout_keep_alive=0.1) as url, lean_client(
                base_url=url, expiry=60.0) as client:
            assert (await client.post("/echo", json=1)).status_code == 200
            await asyncio.sleep(0.4)
            assert (await client.post("/echo", json=2)).json()["body"] == 2

    run(main())


# ---- keep-alive --------------------------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_connection(run: Run[None]) -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server, lean_client() as client:
            for _ in range(2):
                assert (await client.post(server.url + "/a", json={})).json() == {"ok": True}
            assert server.connections == 1 and len(server.requests) == 2

    run(main())


def test_a_connection_close_response_is_not_reused(run: Run[None]) -> None:
    async def keep_open_but_say_close(server: RawServer, reader: asyncio.StreamReader,
                                      writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(ok(b"{}", b"Connection: close"))  # and leaves the socket open

    async def main() -> None:
        async with RawServer(keep_open_but_say_close) as server, lean_client() as client:
            for _ in range(2):
                assert (await client.get(server.url)).status_code == 200
            assert server.connections == 2
            await wait_until(lambda: server.closed_by_client == 2)

    run(main())


def test_an_idle_connection_past_its_expiry_is_closed_not_reused(run: Run[None]) -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server, lean_client(expiry=0.05) as client:
            await client.get(server.url)
            await asyncio.sleep(0.15)
            await client.get(server.url)
            assert server.connections == 2
            await wait_until(lambda: server.closed_by_client == 1)

    run(main())


def test_idle_connections_beyond_the_cap_are_closed(run: Run[None]) -> None:
    async def slow_answers(server: RawServer, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            await asyncio.sleep(0.05)  # so that three requests overlap
            writer.write(ok())

    async def main() -> None:
        async with RawServer(slow_answers) as server, lean_client(max_idle=1) as client:
            await asyncio.gather(*(client.get(server.url) for _ in range(3)))
            assert server.connections == 3
            await wait_until(lambda: server.closed_by_client == 2)
            await client.get(server.url)
            assert server.connections == 3  # the one kept idle served it

    run(main())


# ---- stale connections -------------------------------------------------------------------------


def test_a_request_on_a_connection_closed_while_idle_is_retried_once(run: Run[None]) -> None:
    async def answer_one_then_hang_up(server: RawServer, reader: asyncio.StreamReader,
                                      writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(b'{"n": %d}' % server.connections))
        await server.read_request(reader)  # closes as the next request arrives

    async def main() -> None:
        async with RawServer(answer_one_then_hang_up) as server, lean_client() as client:
            assert (await client.post(server.url, json=1)).json() == {"n": 1}
            assert (await client.post(server.url, json=2)).json() == {"n": 2}
            assert server.connections == 2 and len(server.requests) == 3

    run(main())


def test_no_retry_once_response_bytes_arrived(run: Run[None]) -> None:
    async def answer_one_then_half(server: RawServer, reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(b"{}"))
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"a\"")

    async def main() -> None:
        async with RawServer(answer_one_then_half) as server, lean_client() as client:
            await client.get(server.url)
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)
            assert server.connections == 1

    run(main())


def test_no_retry_on_a_fresh_connection(run: Run[None]) -> None:
    async def hang_up(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async def main() -> None:
        async with RawServer(hang_up) as server, lean_client() as client:
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await client.post(server.url, json={})
            assert caught.value.request.url == server.url
            assert server.connections == 1

    run(main())


# ---- timeouts and failures ---------------------------------------------------------------------


def test_a_server_that_never_answers_is_a_read_timeout(run: Run[None]) -> None:
    async def never_answer(server: RawServer, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(60)

    async def main() -> None:
        async with RawServer(never_answer) as server, lean_client(timeout=0.2) as client:
            start = time.monotonic()
            with pytest.raises(httpx.ReadTimeout) as caught:
                await client.post(server.url, json={})
            assert 0.15 < time.monotonic() - start < 5.0  # the timeout, not the 60 s sleep
            assert caught.value.request.method == "POST"

    run(main())


def test_nothing_listening_is_a_connect_error(run: Run[None]) -> None:
    async def main() -> None:
        async with lean_client(timeout=2.0) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/v1/search")

    run(main())


def test_a_cancelled_request_does_not_leave_its_connection_to_the_next(run: Run[None]) -> None:
    async def slow_then_fast(server: RawServer, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        while (request := await server.read_request(reader)) is not None:
            if b"/slow" in request:
                await asyncio.sleep(0.2)
            writer.write(ok(request.split(b" ")[1]))

    async def main() -> None:
        async with RawServer(slow_then_fast) as server, lean_client() as client:
            await client.get(server.url + "/warm")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.get(server.url + "/slow"), 0.05)
            assert (await client.get(server.url + "/fast")).content == b"/fast"

    run(main())


# ---- response framing --------------------------------------------------------------------------


def test_a_chunked_body_is_read_whole_and_the_connection_kept(run: Run[None]) -> None:
    body = json.dumps({"vector": [0.25] * 384}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 700]), body[i:i + 700])
                      for i in range(0, len(body), 700))

    async def chunked(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(chunks)
            await writer.drain()
            writer.write(b"0\r\n\r\n")

    async def main() -> None:
        async with RawServer(chunked) as server, lean_client() as client:
            for _ in range(2):
                assert (await client.get(server.url)).json() == {"vector": [0.25] * 384}
            assert server.connections == 1

    run(main())


def test_a_body_without_length_ends_when_the_server_closes(run: Run[None]) -> None:
    async def close_delimited(server: RawServer, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[1, 2]")

    async def main() -> None:
        async with RawServer(close_delimited) as server, lean_client() as client:
            assert (await client.get(server.url)).json() == [1, 2]
            assert (await client.get(server.url)).json() == [1, 2]
            assert server.connections == 2

    run(main())


def test_head_goes_to_the_fallback_transport(run: Run[None]) -> None:
    async def head_answer(server: RawServer, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")

    async def main() -> None:
        async with RawServer(head_answer) as server, lean_client() as client:
            resp = await client.head(server.url)
            assert resp.status_code == 200 and resp.content == b""
            assert resp.headers["content-length"] == "5"

    run(main())
