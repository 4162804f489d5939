"""A lean httpx transport for the gateway's calls to its internal services.

httpx's default transport (httpcore over anyio) cost ~1.7 ms of CPU per internal request, half
of the gateway's Python time (docs/benchmarks.md): anyio's machinery, separate socket sends for
head and body, liveness checks before each reuse. `LeanAsyncTransport` keeps the httpx API (the
clients, their error mapping and their tests stay as they are) and does the HTTP/1.1 work on
plain asyncio streams: a keep-alive pool per origin, one `write` per request, responses parsed
by httptools (uvicorn's C parser) and read whole, as internal responses are small JSON bodies.

https, streamed request bodies and HEAD go to a regular `httpx.AsyncHTTPTransport`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque

import httptools
import httpx

# an internal response (a vector, a page of hits) usually arrives in one or two reads
READ_SIZE = 64 * 1024
# the internal clients' pool (sync ones on httpx's transport, async ones on this one): an idle
# connection is dropped here (2 s) before uvicorn drops it (5 s): otherwise a request sent on a
# connection the server is closing at that instant fails ("search unreachable")
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                           keepalive_expiry=2.0)
# the stale-connection errors: the server closed an idle connection as the request went out
_DISCONNECTS = (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)

Origin = tuple[str, int]


class _Connection:
    """One keep-alive connection and when it went idle."""

    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def is_reusable(self, now: float, expiry: float) -> bool:
        # EOF or a reset that already arrived shows here, without a syscall per request
        return (now - self.idle_since < expiry and not self.reader.at_eof()
                and not self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class _StaleConnection(Exception):
    """A reused connection failed before any response byte: the server closed it while idle."""


class _ResponseParts:
    """httptools' callbacks, collecting one response."""

    __slots__ = ("reason", "headers", "body", "started", "headers_done", "complete", "close")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.started = self.headers_done = self.complete = self.close = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if name.lower() == b"connection":
            self.close = b"close" in value.lower()

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def keeps_alive(self, parser: httptools.HttpResponseParser) -> bool:
        # llhttp's own should_keep_alive() reads False once the message is complete
        return self.complete and not self.close and parser.get_http_version() == "1.1"

    def ends_at_eof(self) -> bool:
        """Whether the body is delimited by the server closing (no length, not chunked)."""
        framing = {name.lower() for name, _ in self.headers}
        return self.headers_done and not framing & {b"content-length", b"transfer-encoding"}

    def response(self, parser: httptools.HttpResponseParser, request: httpx.Request
                 ) -> httpx.Response:
        # `stream=`, as transports do: the headers stay as sent and the client decodes the body
        return httpx.Response(
            parser.get_status_code(), headers=self.headers, request=request,
            stream=httpx.ByteStream(b"".join(self.body)),
            extensions={"http_version": b"HTTP/" + parser.get_http_version().encode(),
                        "reason_phrase": self.reason})


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    """Request line, headers (httpx has set Host and Content-Length) and body, for one write."""
    raw = request.headers.raw
    fields = b"".join([name + b": " + value + b"\r\n" for name, value in raw])
    # a CR or LF inside a name or value would smuggle a header or a request (h11 refuses too)
    if fields.count(b"\r") != len(raw) or fields.count(b"\n") != len(raw):
        raise httpx.LocalProtocolError("illegal header name or value", request=request)
    return b"%s %s HTTP/1.1\r\n%s\r\n%s" % (request.method.encode("ascii"),
                                            request.url.raw_path, fields, body)


class LeanAsyncTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio streams for small internal JSON calls (http:// only).

    Limits mean what they mean for httpx: at most `max_connections` requests in flight (the
    next one waits up to the pool timeout), `max_keepalive_connections` idle connections per
    origin, each dropped after `keepalive_expiry` seconds idle.
    """

    def __init__(self, limits: httpx.Limits = POOL_LIMITS) -> None:
        self._limits = limits
        self._expiry = (limits.keepalive_expiry if limits.keepalive_expiry is not None
                        else float("inf"))
        self._max_idle = (limits.max_keepalive_connections
                          if limits.max_keepalive_connections is not None else sys.maxsize)
        self._slots = (asyncio.Semaphore(limits.max_connections)
                       if limits.max_connections is not None else None)
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._fallback: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme != "http" or request.method in ("HEAD", "CONNECT")
                or "transfer-encoding" in request.headers):
            return await self._fallback_transport().handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        message = _request_bytes(request, await request.aread())
        await self._acquire_slot(request, timeouts.get("pool"))
        try:
            return await self._send(request, (url.host, url.port or 80), message, timeouts)
        finally:
            if self._slots is not None:
                self._slots.release()

    async def aclose(self) -> None:
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except OSError:
                pass
        if self._fallback is not None:
            await self._fallback.aclose()

    async def _send(self, request: httpx.Request, origin: Origin, message: bytes,
                    timeouts: dict[str, float | None]) -> httpx.Response:
        """Send on an idle connection if there is one; once more on a fresh one if it was stale.

        A reused connection that ends before any response byte was closed by the server while
        idle (uvicorn drops idle ones after 5 s); repeating the request is the usual client
        behaviour, and the internal calls bear it (search, encode; add and remove replace)."""
        conn = self._checkout(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, origin, message, request, timeouts,
                                            reused=True)
            except _StaleConnection:
                pass
        conn = await self._connect(origin, request, timeouts.get("connect"))
        return await self._exchange(conn, origin, message, request, timeouts, reused=False)

    async def _exchange(self, conn: _Connection, origin: Origin, message: bytes,
                        request: httpx.Request, timeouts: dict[str, float | None], *,
                        reused: bool) -> httpx.Response:
        """One request and its whole response on `conn`, which goes back to the pool only after
        a complete response that keeps it alive (a timeout or a cancellation closes it)."""
        parts = _ResponseParts()
        parser = httptools.HttpResponseParser(parts)
        try:
            await self._write(conn, message, request, timeouts.get("write"))
            await self._read(conn, parser, parts, request, timeouts.get("read"))
        except BaseException as exc:
            conn.close()
            if reused and not parts.started and isinstance(exc, _DISCONNECTS):
                raise _StaleConnection from exc
            raise
        if parts.keeps_alive(parser):
            self._release(origin, conn)
        else:
            conn.close()
        return parts.response(parser, request)

    async def _write(self, conn: _Connection, message: bytes, request: httpx.Request,
                     timeout: float | None) -> None:
        conn.writer.write(message)
        if not conn.writer.transport.get_write_buffer_size():
            return  # all in the kernel already: no drain, no timer (the usual case)
        try:
            async with asyncio.timeout(timeout):
                await conn.writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or repr(exc), request=request) from exc

    async def _read(self, conn: _Connection, parser: httptools.HttpResponseParser,
                    parts: _ResponseParts, request: httpx.Request, timeout: float | None
                    ) -> None:
        while not parts.complete:
            try:
                async with asyncio.timeout(timeout):
                    data = await conn.reader.read(READ_SIZE)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("timed out reading the response",
                                        request=request) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or repr(exc), request=request) from exc
            if not data:
                if parts.ends_at_eof():
                    return
                raise httpx.RemoteProtocolError(
                    "server disconnected before a complete response" if parts.started else
                    "server disconnected without sending a response", request=request)
            parts.started = True
            try:
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                raise httpx.RemoteProtocolError(f"malformed response: {exc}",
                                                request=request) from exc

    async def _connect(self, origin: Origin, request: httpx.Request, timeout: float | None
                       ) -> _Connection:
        host, port = origin
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return _Connection(reader, writer)

    def _checkout(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection that is still usable, closing expired ones."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle and now - idle[0].idle_since >= self._expiry:
            idle.popleft().close()  # oldest first: whatever the newest does not reach
        while idle:
            conn = idle.pop()
            if conn.is_reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    def _release(self, origin: Origin, conn: _Connection) -> None:
        if self._max_idle <= 0:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self._max_idle:
            idle.popleft().close()  # keep the warmest connections
        idle.append(conn)

    async def _acquire_slot(self, request: httpx.Request, timeout: float | None) -> None:
        if self._slots is None:
            return
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once, no timer
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection slot", request=request) from exc

    def _fallback_transport(self) -> httpx.AsyncHTTPTransport:
        # created on first use: building its SSL context costs milliseconds
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(limits=self._limits)
        return self._fallback
