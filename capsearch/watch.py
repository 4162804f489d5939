"""Live folders: `capsearch ingest --watch DIR` keeps a folder indexed, as rclip does.

Every round compares the folder with a small state file (path -> mtime, size, sha256, image id):
a new file is uploaded, a changed file is uploaded again and its old image dropped, a deleted
file's image is deleted. The state is written after every batch, atomically, so a crash loses
at most one batch of bookkeeping; the next round re-uploads those files, and the gateway's
content addressing (sha256) hands back the same ids instead of duplicates.

Only images this watcher brought in are ever deleted: an upload that turns out to be a photo
the collection already had from elsewhere (another source) is recorded but not owned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from capsearch.client import ApiError
from capsearch.files import find_images
from shared.schemas import ImagePublic, UploadItem

log = logging.getLogger(__name__)

STATE_VERSION = 1


class WatchClient(Protocol):
    """What the watcher needs from `CapsearchClient`."""

    def upload(self, paths: Sequence[Path | str], *, source: str | None = None
               ) -> list[UploadItem]: ...

    def image(self, image_id: int) -> ImagePublic: ...

    def delete(self, image_id: int) -> None: ...


@dataclass
class Entry:
    """What the state file knows of one file; `image_id` None = the gateway refused it."""

    mtime_ns: int
    size: int
    sha256: str
    image_id: int | None
    owned: bool = False
    error: str | None = None


@dataclass
class WatchState:
    """path -> Entry, persisted as JSON next to nothing the user owns (data dir by default)."""

    path: Path
    root: str
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, root: Path) -> WatchState:
        if not path.is_file():
            return cls(path=path, root=str(root))
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION or data.get("root") != str(root):
            raise ValueError(f"{path} is the state of another folder or version; "
                             "pass a different --state file")
        entries = {key: Entry(**value) for key, value in data["entries"].items()}
        return cls(path=path, root=str(root), entries=entries)

    def save(self) -> None:
        """Write atomically (temp file + rename): a crash leaves the old or the new state."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": STATE_VERSION, "root": self.root,
                           "entries": {k: asdict(v) for k, v in self.entries.items()}})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".watch-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def default_state_path(data_dir: Path, root: Path) -> Path:
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return data_dir / "watch" / f"{digest}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.failed)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} "
                f"removed, {len(self.failed)} refused, {self.unchanged} unchanged")


@dataclass(frozen=True)
class _Pending:
    key: str
    path: Path
    mtime_ns: int
    size: int
    sha256: str


class FolderWatcher:
    """Brings the collection in line with a folder, one `sync_once` round at a time."""

    def __init__(self, client: WatchClient, root: Path, state: WatchState, *,
                 batch: int = 16) -> None:
        self.client = client
        self.root = root.resolve()
        self.state = state
        self.batch = max(1, batch)

    def sync_once(self) -> SyncReport:
        report = SyncReport()
        if not self.root.is_dir():  # unmounted or moved: never read that as "all deleted"
            raise FileNotFoundError(f"the watched folder {self.root} is not there")
        files = find_images([self.root])
        present = {str(p) for p in files}
        pending = self._changed_files(files, report)
        for parent, group in _by_parent(pending).items():
            for start in range(0, len(group), self.batch):
                self._upload(group[start:start + self.batch], parent, report)
                self.state.save()
        for key in [k for k in self.state.entries if k not in present]:
            old = self.state.entries.pop(key)
            self._release(old)
            report.removed.append(key)
            self.state.save()
        return report

    def _changed_files(self, files: list[Path], report: SyncReport) -> list[_Pending]:
        pending = []
        for path in files:
            key = str(path)
            try:
                st = path.stat()
                entry = self.state.entries.get(key)
                if entry and (entry.mtime_ns, entry.size) == (st.st_mtime_ns, st.st_size):
                    report.unchanged += 1
                    continue
                sha = file_sha256(path)
            except OSError as exc:  # vanished or unreadable between listing and reading
                report.failed[key] = str(exc)
                continue
            if entry and entry.sha256 == sha and entry.image_id is not None:
                entry.mtime_ns, entry.size = st.st_mtime_ns, st.st_size  # touched, same bytes
                report.unchanged += 1
                continue
            pending.append(_Pending(key, path, st.st_mtime_ns, st.st_size, sha))
        return pending

    def _upload(self, group: list[_Pending], parent: str, report: SyncReport) -> None:
        try:
            items = self.client.upload([p.path for p in group], source=parent)
        except ApiError as exc:
            if exc.status >= 500 or len(group) == 1:
                if exc.status >= 500:
                    raise  # the service is unwell: stop this round, retry the next
                self._refuse(group[0], exc.message, report)
                return
            for one in group:  # a request fails on its first bad file: find which, alone
                self._upload([one], parent, report)
            return
        for pend, item in zip(group, items, strict=True):
            old = self.state.entries.get(pend.key)
            owned = not item.duplicate or self._ours(item.id)
            self.state.entries[pend.key] = Entry(pend.mtime_ns, pend.size, pend.sha256,
                                                 item.id, owned)
            if old is None or old.image_id is None:
                report.added.append(pend.key)
            else:
                report.changed.append(pend.key)
                if old.image_id != item.id:
                    self._release(old)

    def _refuse(self, pend: _Pending, reason: str, report: SyncReport) -> None:
        """Remember a refused file so it is not sent again until it changes."""
        self.state.entries[pend.key] = Entry(pend.mtime_ns, pend.size, pend.sha256, None,
                                             error=reason)
        report.failed[pend.key] = reason

    def _ours(self, image_id: int) -> bool:
        """A duplicate is ours when it came from this folder (a round that crashed before
        saving uploaded it), not when someone else's upload holds the same bytes."""
        try:
            source = self.client.image(image_id).source
        except ApiError:
            return False
        return source == str(self.root) or source.startswith(str(self.root) + os.sep)

    def _release(self, entry: Entry) -> None:
        """Delete an image the watcher owns once no watched file maps to it any more."""
        if entry.image_id is None or not entry.owned:
            return
        if any(e.image_id == entry.image_id for e in self.state.entries.values()):
            return
        try:
            self.client.delete(entry.image_id)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def run(self, *, interval_s: float, stop: threading.Event | None = None,
            max_rounds: int | None = None) -> None:
        """Sync now and then every `interval_s` until `stop` is set (or `max_rounds` ran)."""
        stop = stop or threading.Event()
        rounds = 0
        while not stop.is_set():
            try:
                report = self.sync_once()
                if report.touched:
                    log.info("%s: %s", self.root, report.summary())
                    for key, reason in report.failed.items():
                        log.warning("refused %s: %s", key, reason)
            except (ApiError, OSError, httpx.HTTPError) as exc:
                log.warning("sync of %s failed, retrying in %.0f s: %s", self.root,
                            interval_s, exc)
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                return
            stop.wait(interval_s)


def _by_parent(pending: list[_Pending]) -> dict[str, list[_Pending]]:
    groups: dict[str, list[_Pending]] = defaultdict(list)
    for pend in pending:
        groups[str(pend.path.parent)].append(pend)
    return groups
