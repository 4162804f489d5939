"""`capsearch db check|upgrade` on an instance's database (SQLite here; Postgres in
tests/integration/test_migrations_postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsearch.cli import main
from shared.db.migrate import head_revision


def test_check_fails_on_an_empty_database_until_upgrade(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    (tmp_path / "capsearch.db").touch()  # exists, holds nothing
    assert main(["db", "check", *data]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `capsearch db upgrade`" in err

    assert main(["db", "upgrade", *data]) == 0
    assert f"upgraded from nothing to {head_revision()}" in capsys.readouterr().out
    assert main(["db", "upgrade", *data]) == 0
    assert "already at revision" in capsys.readouterr().out

    assert main(["db", "check", *data]) == 0
    assert f"at the head revision {head_revision()}" in capsys.readouterr().out


def test_check_says_in_one_line_that_the_database_is_unreachable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import get_settings

    monkeypatch.setenv("CAPSEARCH_DATABASE_URL", f"sqlite:///{tmp_path / 'no' / 'such.db'}")
    get_settings.cache_clear()
    try:
        assert main(["db", "check"]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("capsearch: cannot reach the database")
