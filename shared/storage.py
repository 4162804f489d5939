"""Blob store: originals and thumbnails, content-addressed by sha256.

Two implementations behind one small interface: a local folder (embedded mode) and
MinIO/S3 through the `minio` client (stack, compose, Kubernetes).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from shared.config import Settings
from shared.errors import DependencyUnavailable, NotFound

log = logging.getLogger(__name__)


def original_key(sha256: str) -> str:
    return f"originals/{sha256[:2]}/{sha256}"


def thumbnail_key(sha256: str) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256}.jpg"


class BlobStore(Protocol):
    """Put/get/delete immutable blobs by key."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        ...

    def get(self, key: str) -> bytes:
        ...

    def exists(self, key: str) -> bool:
        ...

    def delete(self, key: str) -> None:
        ...

    def ping(self) -> None:
        ...

    def scan(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every key under `prefix` with its last-modified time (for `capsearch doctor`)."""
        ...


class LocalBlobStore:
    """Blobs as files under one folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def ping(self) -> None:
        if not self.root.is_dir():
            raise DependencyUnavailable(f"blob folder {self.root} is missing")

    def scan(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        root = self.root.resolve()
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                yield path.relative_to(root).as_posix(), mtime


class S3BlobStore:
    """Blobs in one S3 bucket (MinIO in production, any S3-compatible server in tests)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        import urllib3
        from minio import Minio

        # fail fast instead of urllib3's default long retry loop when S3 is down
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            maxsize=16,
        )
        self.bucket = bucket
        self.bucket_ready = False
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as exc:  # connection refused, auth, ...
            raise DependencyUnavailable(f"S3 bucket {self.bucket} unavailable: {exc}") from exc
        self.bucket_ready = True

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if not self.bucket_ready:  # S3 was down when this process started
            self.ensure_bucket()
        try:
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        except Exception as exc:
            raise DependencyUnavailable(f"S3 put {key} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"blob {key} not found") from None
            raise DependencyUnavailable(f"S3 get {key} failed: {exc}") from exc
        except Exception as exc:
            raise DependencyUnavailable(f"S3 get {key} failed: {exc}") from exc
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise DependencyUnavailable(f"S3 stat {key} failed: {exc}") from exc
        except Exception as exc:
            raise DependencyUnavailable(f"S3 stat {key} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except Exception as exc:
            raise DependencyUnavailable(f"S3 delete {key} failed: {exc}") from exc

    def ping(self) -> None:
        try:
            self.client.bucket_exists(self.bucket)
        except Exception as exc:
            raise DependencyUnavailable(f"S3 unreachable: {exc}") from exc

    def scan(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                modified = obj.last_modified or datetime.now(UTC)
                yield str(obj.object_name), modified
        except Exception as exc:
            raise DependencyUnavailable(f"S3 list {prefix} failed: {exc}") from exc


def make_blob_store(settings: Settings, *, require: bool = True) -> BlobStore:
    """The store the settings name; an S3 store gets its bucket created if missing.

    With `require=False` an unreachable S3 is not an error yet: the bucket is created on the
    first write (the gateway starts while S3 is down and answers 503 until it is back).
    """
    if settings.blob_backend == "s3":
        s3 = settings.s3
        store = S3BlobStore(
            s3.endpoint,
            s3.access_key,
            s3.secret_key.get_secret_value(),
            s3.bucket,
            secure=s3.secure,
            region=s3.region,
        )
        try:
            store.ensure_bucket()
        except DependencyUnavailable as exc:
            if require:
                raise
            log.warning("blob store not reachable yet (will retry on first write): %s",
                        exc.message)
        return store
    return LocalBlobStore(settings.blob_dir)
