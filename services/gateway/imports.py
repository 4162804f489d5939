"""Bulk imports (`POST /v1/imports`): a server-side folder or a bucket prefix, read by the
gateway itself, only from the places the settings allow (`import_roots`, `import_prefixes`).

Never a URL: the gateway fetches nothing from the network on a caller's behalf. A folder must
resolve (symlinks followed) inside an allowed root, and so must every file found in it; a prefix
must start with an allowed one and hold no `..` segment. Files go through the same checks and
the same store-then-enqueue path as uploads (`uploads.ingest_checked`), a batch at a time, and
the job's progress is a database row, so any gateway replica answers `GET /v1/imports/{id}`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Literal

import anyio
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.core.context import GatewayContext
from services.gateway.uploads import (
    CheckedUpload,
    ingest_checked,
    printable,
    validate_uploads,
)
from shared.config import Settings
from shared.db import ImportJob, ImportStatus
from shared.db.models import utcnow
from shared.errors import CapsearchError, Forbidden, NotFound, ValidationFailed
from shared.metrics import IMPORTED_FILES
from shared.schemas import ImportCreate, ImportPublic

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_ERRORS_KEPT = 20
BATCH_FILES = 16
# a running job touches its row at least this often (also while it lists a large folder) ...
HEARTBEAT_S = 30.0
# ... so one untouched for this long lost its gateway (killed, not stopped): the sweeper fails it
STALE_AFTER_S = 300.0


def import_public(job: ImportJob) -> ImportPublic:
    return ImportPublic(
        id=job.id, kind=job.kind, location=job.location,
        status=job.status, total=job.total, processed=job.processed, added=job.added,
        duplicates=job.duplicates, failed=job.failed,
        errors=[e for e in job.errors.split("\n") if e], error=job.error,
        created_at=job.created_at, updated_at=job.updated_at, finished_at=job.finished_at,
        status_url=f"/v1/imports/{job.id}")


# ---- where files come from ---------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of an import: a name for messages, the folder recorded as its source, a reader."""

    name: str
    filename: str
    source: str
    read: Callable[[int], bytes]  # reads at most n bytes


class ImportSource:
    kind: Literal["folder", "s3"]
    location: str

    def files(self) -> Iterator[SourceFile]:
        raise NotImplementedError


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_SUFFIXES


class FolderSource(ImportSource):
    """Image files under a folder that lies inside one of the allowed roots."""

    kind = "folder"

    def __init__(self, folder: Path, root: Path) -> None:
        self.folder, self.root = folder, root
        self.location = str(folder)

    def files(self) -> Iterator[SourceFile]:
        for dirpath, dirnames, filenames in os.walk(self.folder, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not _is_image(name):
                    continue
                path = Path(dirpath, name)
                real = path.resolve()
                if not real.is_relative_to(self.root) or not real.is_file():
                    continue  # a symlink out of the allowed root, or not a regular file
                yield SourceFile(name=str(path), filename=name, source=dirpath,
                                 read=_file_reader(real))


def _file_reader(path: Path) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with path.open("rb") as f:
            return f.read(limit)
    return read


class S3PrefixSource(ImportSource):
    """Image objects under a key prefix of the import bucket."""

    kind = "s3"

    def __init__(self, client: object, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.location = f"s3://{bucket}/{prefix}"

    def files(self) -> Iterator[SourceFile]:
        listing = self.client.list_objects(  # type: ignore[attr-defined]
            self.bucket, prefix=self.prefix, recursive=True)
        for obj in listing:
            key = obj.object_name
            if obj.is_dir or not _is_image(key):
                continue
            parent = str(PurePosixPath(key).parent)
            yield SourceFile(name=f"s3://{self.bucket}/{key}", filename=PurePosixPath(key).name,
                             source=f"s3://{self.bucket}/{'' if parent == '.' else parent}",
                             read=self._reader(key))

    def _reader(self, key: str) -> Callable[[int], bytes]:
        def read(limit: int) -> bytes:
            get = self.client.get_object  # type: ignore[attr-defined]
            resp = get(self.bucket, key, length=limit)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()
        return read


def resolve_source(body: ImportCreate, *, settings: Settings, store: object) -> ImportSource:
    """Where the import reads from, if the settings allow it (403 when they do not)."""
    if body.folder is not None:
        return _folder_source(body.folder, settings)
    return _prefix_source(body.prefix or "", settings, store)


def _folder_source(folder: str, settings: Settings) -> FolderSource:
    if not settings.import_roots:
        raise Forbidden("folder imports are off: no CAPSEARCH_IMPORT_ROOTS configured")
    if "\x00" in folder or not Path(folder).is_absolute():
        raise ValidationFailed("folder: must be an absolute path on the server")
    try:  # not strict: whether a path outside the roots exists is none of the caller's business
        real = Path(folder).resolve()
    except (OSError, RuntimeError):
        real = None
    for root in settings.import_roots:
        root_real = Path(root).resolve()
        if real is not None and real.is_relative_to(root_real):
            if not real.exists():
                raise NotFound(f"folder {folder!r} does not exist on the server")
            if not real.is_dir():
                raise ValidationFailed(f"folder: {folder!r} is not a folder")
            return FolderSource(real, root_real)
    # the same answer for every path outside the roots, existing or not
    raise Forbidden(f"folder {folder!r} is outside the allowed import roots")


def _prefix_source(prefix: str, settings: Settings, store: object) -> S3PrefixSource:
    client = getattr(store, "client", None)
    if settings.blob_backend != "s3" or client is None:
        raise ValidationFailed("prefix: bucket imports need the S3 blob backend; import a "
                               "folder instead")
    if not settings.import_prefixes:
        raise Forbidden("bucket imports are off: no CAPSEARCH_IMPORT_PREFIXES configured")
    parts = prefix.split("/")
    if prefix.startswith("/") or ".." in parts or not prefix.isprintable():
        raise ValidationFailed("prefix: a relative key prefix without '..' segments")
    if not any(prefix.startswith(allowed) for allowed in settings.import_prefixes if allowed):
        raise Forbidden(f"prefix {prefix!r} is outside the allowed import prefixes")
    return S3PrefixSource(client, settings.import_bucket or settings.s3.bucket, prefix)


# ---- the job -----------------------------------------------------------------------------------


class MemoryUpload:
    """Bytes already read, behind the `UploadSource` protocol that the upload checks take."""

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename: str | None = filename
        self._data = data
        self._pos = 0

    async def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk

    async def seek(self, offset: int) -> None:
        self._pos = offset


def create_job(factory: sessionmaker[Session], source: ImportSource) -> int:
    with factory.begin() as session:
        job = ImportJob(kind=source.kind, location=source.location,
                        status=ImportStatus.queued.value, errors="")
        session.add(job)
        session.flush()
        return int(job.id)


def read_job(factory: sessionmaker[Session], job_id: int) -> ImportPublic:
    with factory() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise NotFound(f"import {job_id} not found")
        return import_public(job)


def _update(factory: sessionmaker[Session], job_id: int, **values: object) -> None:
    with factory.begin() as session:
        session.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))


@dataclass
class Progress:
    processed: int = 0
    added: int = 0
    duplicates: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        IMPORTED_FILES.labels("failed").inc()
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(printable(f"{name}: {reason}")[:500])

    def values(self) -> dict[str, object]:
        return {"processed": self.processed, "added": self.added, "duplicates": self.duplicates,
                "failed": self.failed, "errors": "\n".join(self.errors)}


async def _check(file: SourceFile, settings: Settings, progress: Progress
                 ) -> CheckedUpload | None:
    """Read and check one file; a bad file is counted and skipped, never fatal."""
    try:
        data = await anyio.to_thread.run_sync(file.read, settings.max_upload_bytes + 1)
        [checked] = await validate_uploads(uploads=[MemoryUpload(file.filename, data)],
                                           settings=settings)
        return checked
    except CapsearchError as exc:
        progress.fail(file.name, exc.message)
    except OSError as exc:
        progress.fail(file.name, f"cannot read: {exc}")
    return None


async def _ingest_batch(batch: list[SourceFile], context: GatewayContext,
                        progress: Progress) -> None:
    settings = context.settings
    by_source: dict[str, list[CheckedUpload]] = {}
    for file in batch:
        checked = await _check(file, settings, progress)
        if checked is not None:
            by_source.setdefault(file.source, []).append(checked)
    for source, checked_files in by_source.items():
        response = await ingest_checked(checked=checked_files, source=source,
                                        settings=settings, factory=context.session_factory,
                                        store=context.store, queue=context.queue)
        for item in response.images:
            if item.duplicate:
                progress.duplicates += 1
            else:
                progress.added += 1
            IMPORTED_FILES.labels("duplicate" if item.duplicate else "added").inc()
    progress.processed += len(batch)


async def run_import(job_id: int, source: ImportSource, context: GatewayContext) -> None:
    """List the files, then check, store and enqueue them a batch at a time; the row's
    `updated_at` beats every `HEARTBEAT_S` meanwhile (see `fail_stale_imports`)."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_heartbeat, context.session_factory, job_id)
        try:
            await _run_import(job_id, source, context)
        finally:
            tasks.cancel_scope.cancel()


async def _heartbeat(factory: sessionmaker[Session], job_id: int) -> None:
    while True:
        await anyio.sleep(HEARTBEAT_S)
        try:
            await anyio.to_thread.run_sync(partial(_update, factory, job_id,
                                                   updated_at=utcnow()))
        except Exception as exc:  # the database is briefly away: the next beat tries again
            log.warning("import %d heartbeat failed: %s", job_id, exc)


def fail_stale_imports(factory: sessionmaker[Session], older_than_s: float = STALE_AFTER_S,
                       *, now: datetime | None = None) -> list[int]:
    """Jobs queued or running whose row nobody touched for `older_than_s` before `now` (the
    clock; a test sets it): their gateway died (a stopped gateway fails its jobs itself).
    They are marked failed with a reason; importing the same folder again skips what was
    already imported (as duplicates)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    with factory.begin() as session:
        ids = list(session.scalars(
            update(ImportJob)
            .where(ImportJob.status.in_([ImportStatus.queued.value, ImportStatus.running.value]),
                   ImportJob.updated_at < cutoff)
            .values(status=ImportStatus.failed.value, finished_at=now,
                    error=f"interrupted: no progress for {older_than_s:.0f} s (the gateway "
                          "running it stopped); start the import again, files already "
                          "imported count as duplicates")
            .returning(ImportJob.id)))
    return [int(i) for i in ids]


async def _run_import(job_id: int, source: ImportSource, context: GatewayContext) -> None:
    factory = context.session_factory
    progress = Progress()
    try:
        await anyio.to_thread.run_sync(lambda: _update(factory, job_id,
                                                       status=ImportStatus.running.value))
        files = await anyio.to_thread.run_sync(lambda: list(source.files()))
        await anyio.to_thread.run_sync(lambda: _update(factory, job_id, total=len(files)))
        for start in range(0, len(files), BATCH_FILES):
            await _ingest_batch(files[start:start + BATCH_FILES], context, progress)
            await anyio.to_thread.run_sync(partial(_update, factory, job_id,
                                                   **progress.values()))
        final: dict[str, object] = {"status": ImportStatus.done.value}
        log.info("import %d of %s done: %d added, %d duplicates, %d failed", job_id,
                 source.location, progress.added, progress.duplicates, progress.failed)
    except asyncio.CancelledError:
        final = {"status": ImportStatus.failed.value, "error": "the gateway stopped"}
        await anyio.to_thread.run_sync(lambda: _finish(factory, job_id, progress, final))
        raise
    except Exception as exc:
        log.exception("import %d of %s failed", job_id, source.location)
        message = (exc.message if isinstance(exc, CapsearchError)
                   else f"{type(exc).__name__}: {exc}")
        final = {"status": ImportStatus.failed.value, "error": message[:1000]}
    await anyio.to_thread.run_sync(lambda: _finish(factory, job_id, progress, final))


def _finish(factory: sessionmaker[Session], job_id: int, progress: Progress,
            final: dict[str, object]) -> None:
    _update(factory, job_id, **progress.values(), **final, finished_at=utcnow())


class ImportRunner:
    """The import jobs this gateway process runs, as tasks of its event loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, job_id: int, source: ImportSource, context: GatewayContext) -> None:
        task = asyncio.get_running_loop().create_task(run_import(job_id, source, context),
                                                      name=f"import-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every running import finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()
