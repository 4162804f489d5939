"""POST /v1/imports of a server-side folder (only under allowed roots) and its progress."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from shared.db import ImageRecord
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error, synthetic_jpeg


@pytest.fixture
def photo_root(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2024" / "may").mkdir(parents=True)
    (root / "2024" / "a.jpg").write_bytes(synthetic_jpeg(seed=1))
    (root / "2024" / "may" / "b.jpg").write_bytes(synthetic_jpeg(seed=2))
    (root / "2024" / "may" / "z-copy.jpg").write_bytes((root / "2024" / "may" / "b.jpg")
                                                      .read_bytes())
    (root / "2024" / "bad.jpg").write_bytes(b"not a jpeg at all")
    (root / "2024" / "notes.txt").write_text("not a photo")
    (root / "2024" / ".hidden.jpg").write_bytes(synthetic_jpeg(seed=3))
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.jpg").write_bytes(synthetic_jpeg(seed=4))
    (root / "2024" / "link.jpg").symlink_to(outside / "s.jpg")
    return root


@pytest.fixture
def importer(make_gateway: GatewayFactory, photo_root: Path) -> Gateway:
    return make_gateway(import_roots=[photo_root])


def wait_done(gateway: Gateway, import_id: int, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = gateway.client.get(f"/v1/imports/{import_id}").json()
        if body["status"] in ("done", "failed"):
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} did not finish")


def test_folder_import_adds_its_photos_and_reports_progress(importer: Gateway,
                                                            photo_root: Path) -> None:
    resp = importer.client.post("/v1/imports", json={"folder": str(photo_root / "2024")})
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["kind"] == "folder"
    assert started["status_url"] == f"/v1/imports/{started['id']}"
    done = wait_done(importer, started["id"])
    assert done["status"] == "done", done
    # a.jpg, b.jpg, z-copy.jpg, bad.jpg: not the .txt, the hidden file or the symlink out
    assert (done["total"], done["processed"]) == (4, 4)
    assert (done["added"], done["duplicates"], done["failed"]) == (2, 1, 1)
    assert len(done["errors"]) == 1 and "bad.jpg" in done["errors"][0]
    assert done["finished_at"] is not None
    with importer.session_factory() as session:
        rows = {r.filename: r.source for r in session.query(ImageRecord)}
    assert rows == {"a.jpg": str(photo_root / "2024"),
                    "b.jpg": str(photo_root / "2024" / "may")}
    assert len(importer.queue.ids) == 2  # both new images queued for captioning


def test_import_outside_the_roots_is_403(importer: Gateway, tmp_path: Path) -> None:
    for folder in (str(tmp_path / "secret"), str(tmp_path / "photos" / ".." / "secret"), "/"):
        resp = importer.client.post("/v1/imports", json={"folder": folder})
        assert_error(resp, 403, "forbidden")


def test_import_of_a_symlink_out_of_the_root_is_403(importer: Gateway, photo_root: Path,
                                                    tmp_path: Path) -> None:
    (photo_root / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    resp = importer.client.post("/v1/imports", json={"folder": str(photo_root / "escape")})
    assert_error(resp, 403, "forbidden")


def test_imports_are_off_without_roots(gateway: Gateway, photo_root: Path) -> None:
    resp = gateway.client.post("/v1/imports", json={"folder": str(photo_root)})
    assert "IMPORT_ROOTS" in assert_error(resp, 403, "forbidden")


@pytest.mark.parametrize("body", [{}, {"folder": "relative/path"},
                                  {"folder": "/a", "prefix": "b/"}],
                         ids=["empty", "relative", "both"])
def test_bad_import_requests_are_422(importer: Gateway, body: dict[str, str]) -> None:
    assert_error(importer.client.post("/v1/imports", json=body), 422, "validation_error")


def test_paths_outside_the_roots_get_one_answer_whether_they_exist_or_not(
        importer: Gateway, tmp_path: Path) -> None:
    """An admin key must not learn which server paths exist (security probe of #17)."""
    answers = []
    for folder in ("/etc", "/no/such/place", str(tmp_path / "secret"), "/root/.ssh/x"):
        resp = importer.client.post("/v1/imports", json={"folder": folder})
        answers.append((resp.status_code, resp.json()["error"]["code"],
                        resp.json()["error"]["message"].replace(repr(folder), "F")))
    assert len(set(answers)) == 1 and answers[0][0] == 403, answers


def test_missing_folder_is_404(importer: Gateway, photo_root: Path) -> None:
    resp = importer.client.post("/v1/imports", json={"folder": str(photo_root / "nope")})
    assert_error(resp, 404, "not_found")


def test_bucket_prefix_needs_the_s3_backend(importer: Gateway) -> None:
    resp = importer.client.post("/v1/imports", json={"prefix": "incoming/"})
    assert "S3" in assert_error(resp, 422, "validation_error")


def test_unknown_import_is_404(importer: Gateway) -> None:
    assert_error(importer.client.get("/v1/imports/999"), 404, "not_found")


def test_an_import_whose_gateway_died_is_failed_by_the_sweep(importer: Gateway) -> None:
    """A killed gateway cannot mark its job; a job nobody touched for long is failed (with a
    reason) instead of showing `running` forever; live and finished jobs are left alone."""
    from datetime import timedelta

    from services.gateway.imports import fail_stale_imports
    from shared.db import ImportJob
    from shared.db.models import utcnow

    old = utcnow() - timedelta(minutes=20)
    with importer.session_factory.begin() as session:
        jobs = [ImportJob(kind="folder", location="/x", status=status, errors="",
                          updated_at=when)
                for status, when in (("running", old), ("queued", old), ("running", utcnow()),
                                     ("done", old))]
        session.add_all(jobs)
        session.flush()
        ids = [job.id for job in jobs]
    assert sorted(fail_stale_imports(importer.session_factory)) == ids[:2]
    states = [importer.client.get(f"/v1/imports/{i}").json() for i in ids]
    assert [s["status"] for s in states] == ["failed", "failed", "running", "done"]
    assert "interrupted" in states[0]["error"] and states[0]["finished_at"] is not None
    assert fail_stale_imports(importer.session_factory) == []


def test_a_slow_import_keeps_its_row_alive_while_it_lists(importer: Gateway, photo_root: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While a huge folder is listed the job's row keeps being touched, so the sweep does not
    take it for dead. The listing is held until the row shows a beat made during it: the
    test waits on that, not on time."""
    import threading
    from datetime import timedelta

    import services.gateway.imports as imports_module
    from services.gateway.imports import fail_stale_imports
    from shared.db import ImportJob
    from shared.db.models import aware, utcnow

    monkeypatch.setattr(imports_module, "HEARTBEAT_S", 0.05)
    stale_s = 300.0
    listing = imports_module.FolderSource.files
    started: list[datetime] = []
    release = threading.Event()

    def slow_files(self):  # type: ignore[no-untyped-def]
        started.append(utcnow())
        release.wait(30)  # a huge folder, until the test has seen a beat
        return listing(self)

    monkeypatch.setattr(imports_module.FolderSource, "files", slow_files)
    job = importer.client.post("/v1/imports", json={"folder": str(photo_root / "2024")}).json()
    deadline = time.monotonic() + 30
    beat = None
    while beat is None or not started or beat <= started[0]:
        assert time.monotonic() < deadline, "no heartbeat while listing"
        time.sleep(0.01)
        with importer.session_factory() as session:
            beat = aware(session.get(ImportJob, job["id"]).updated_at)
    # a sweep that counts a row untouched since the listing began as dead spares this one
    sweep_clock = started[0] + timedelta(seconds=stale_s)
    assert fail_stale_imports(importer.session_factory, older_than_s=stale_s,
                              now=sweep_clock) == []
    release.set()
    assert wait_done(importer, job["id"])["status"] == "done"
