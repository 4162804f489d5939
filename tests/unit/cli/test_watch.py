"""`capsearch ingest --watch`: added, changed and deleted files, resumable state, refusals.

The watcher talks to a real gateway app (TestClient transport; encoder and search faked)."""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

import pytest

from capsearch.client import CapsearchClient
from capsearch.commands.watch import run_watch
from capsearch.watch import FolderWatcher, WatchState, default_state_path
from shared.db import ImageRecord
from tests.unit.gateway.conftest import (
    Gateway,
    GatewayFactory,
    make_gateway,  # noqa: F401  (the fixture)
    synthetic_jpeg,
)


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:  # noqa: F811
    return make_gateway()


@pytest.fixture
def client(gateway: Gateway) -> CapsearchClient:
    """The real client over the gateway's TestClient (an httpx.Client bound to the app)."""
    c = CapsearchClient("http://testserver")
    c.close()
    c._http = gateway.client  # the fixture closes it
    return c


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    (root / "a.jpg").write_bytes(synthetic_jpeg(seed=1))
    (root / "trip" / "b.jpg").write_bytes(synthetic_jpeg(seed=2))
    (root / "notes.txt").write_text("not a photo")
    return root


def watcher_for(client: CapsearchClient, folder: Path, tmp_path: Path) -> FolderWatcher:
    state = WatchState.load(tmp_path / "state.json", folder.resolve())
    return FolderWatcher(client, folder, state)


def stored(gateway: Gateway) -> dict[str, str]:
    with gateway.session_factory() as session:
        return {r.filename: r.source for r in session.query(ImageRecord)}


def test_watch_picks_up_an_added_and_a_deleted_file(gateway: Gateway, client: CapsearchClient,
                                                    folder: Path, tmp_path: Path) -> None:
    watcher = watcher_for(client, folder, tmp_path)
    first = watcher.sync_once()
    assert len(first.added) == 2 and not first.removed
    assert stored(gateway) == {"a.jpg": str(folder.resolve()),
                               "b.jpg": str((folder / "trip").resolve())}

    (folder / "trip" / "c.jpg").write_bytes(synthetic_jpeg(seed=3))
    (folder / "a.jpg").unlink()
    second = watcher.sync_once()
    assert [Path(p).name for p in second.added] == ["c.jpg"]
    assert [Path(p).name for p in second.removed] == ["a.jpg"]
    assert set(stored(gateway)) == {"b.jpg", "c.jpg"}  # a.jpg's image was deleted
    assert second.unchanged == 1

    quiet = watcher.sync_once()
    assert not quiet.touched and quiet.unchanged == 2


def test_a_changed_file_replaces_its_image(gateway: Gateway, client: CapsearchClient,
                                           folder: Path, tmp_path: Path) -> None:
    watcher = watcher_for(client, folder, tmp_path)
    watcher.sync_once()
    old_id = watcher.state.entries[str((folder / "a.jpg").resolve())].image_id
    (folder / "a.jpg").write_bytes(synthetic_jpeg(seed=7, size=(80, 60)))
    report = watcher.sync_once()
    assert [Path(p).name for p in report.changed] == ["a.jpg"]
    new_id = watcher.state.entries[str((folder / "a.jpg").resolve())].image_id
    assert new_id != old_id and gateway.row(old_id) is None and gateway.row(new_id) is not None


def test_a_touched_but_identical_file_is_not_uploaded_again(
        gateway: Gateway, client: CapsearchClient, folder: Path, tmp_path: Path) -> None:
    watcher = watcher_for(client, folder, tmp_path)
    watcher.sync_once()
    os.utime(folder / "a.jpg", ns=(1, 1))
    batches = len(gateway.queue.batches)
    report = watcher.sync_once()
    assert not report.touched and len(gateway.queue.batches) == batches


def test_the_state_survives_a_restart_and_a_crash_before_saving(
        gateway: Gateway, client: CapsearchClient, folder: Path, tmp_path: Path) -> None:
    watcher_for(client, folder, tmp_path).sync_once()
    # a new process reads the state: nothing to do
    assert not watcher_for(client, folder, tmp_path).sync_once().touched
    # a crash after uploading but before saving: the next round re-uploads, the gateway
    # answers with the same ids (content address), and the images stay the watcher's own
    (tmp_path / "state.json").unlink()
    again = watcher_for(client, folder, tmp_path)
    report = again.sync_once()
    assert len(report.added) == 2 and len(stored(gateway)) == 2
    (folder / "a.jpg").unlink()
    again.sync_once()
    assert set(stored(gateway)) == {"b.jpg"}


def test_someone_elses_copy_is_never_deleted(gateway: Gateway, client: CapsearchClient,
                                             folder: Path, tmp_path: Path) -> None:
    client.upload([folder / "a.jpg"], source="phone")
    watcher = watcher_for(client, folder, tmp_path)
    watcher.sync_once()
    (folder / "a.jpg").unlink()
    watcher.sync_once()
    assert "a.jpg" in stored(gateway)  # the phone's upload of the same bytes stays


def test_a_refused_file_is_not_sent_again_until_it_changes(
        gateway: Gateway, client: CapsearchClient, folder: Path, tmp_path: Path) -> None:
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    watcher = watcher_for(client, folder, tmp_path)
    report = watcher.sync_once()
    assert [Path(p).name for p in report.failed] == ["broken.jpg"]
    assert len(report.added) == 2  # the good files of the same batch still went in
    assert not watcher.sync_once().failed


def test_a_missing_folder_is_an_error_not_a_mass_delete(
        gateway: Gateway, client: CapsearchClient, folder: Path, tmp_path: Path) -> None:
    watcher = watcher_for(client, folder, tmp_path)
    watcher.sync_once()
    folder.rename(tmp_path / "unmounted")
    with pytest.raises(FileNotFoundError):
        watcher.sync_once()
    assert len(stored(gateway)) == 2


def test_run_loops_until_stopped(client: CapsearchClient, folder: Path, tmp_path: Path) -> None:
    watcher = watcher_for(client, folder, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, kwargs={"interval_s": 0.05, "stop": stop})
    thread.start()
    (folder / "late.jpg").write_bytes(synthetic_jpeg(seed=5))
    deadline = threading.Event()
    for _ in range(100):
        if str((folder / "late.jpg").resolve()) in watcher.state.entries:
            break
        deadline.wait(0.05)
    stop.set()
    thread.join(5)
    assert str((folder / "late.jpg").resolve()) in watcher.state.entries


def test_state_of_another_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    WatchState(path=tmp_path / "s.json", root=str(folder)).save()
    with pytest.raises(ValueError, match="another folder"):
        WatchState.load(tmp_path / "s.json", tmp_path)
    assert default_state_path(tmp_path, folder) != default_state_path(tmp_path, tmp_path)


def test_watch_command_needs_exactly_one_folder(folder: Path) -> None:
    args = argparse.Namespace(paths=[folder, folder], url=None, state=None, interval=1.0,
                              batch=16)
    assert run_watch(args) == 2
