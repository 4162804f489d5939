"""Gateway, search and caption worker refuse to start on a database that is not migrated, and
name the command that fixes it; a database that does not answer yet is waited for instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.db import make_engine
from shared.db.migrate import require_current_at_start, upgrade

SERVICES = ["services.gateway", "services.search", "services.caption"]


@pytest.mark.parametrize("module", SERVICES)
def test_a_service_refuses_a_database_that_is_behind(tmp_path: Path, module: str) -> None:
    (tmp_path / "capsearch.db").touch()  # answers, but empty: behind the head revision
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env["CAPSEARCH_DATA_DIR"] = str(tmp_path)  # its SQLite file: the services' default
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "refusing to start" in last and "run `capsearch db upgrade`" in last


def test_the_start_check_passes_a_current_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'capsearch.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    require_current_at_start(url, "gateway")  # returns


def test_the_start_check_leaves_an_unreachable_database_to_the_service(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_current_at_start(f"sqlite:///{tmp_path / 'not-yet' / 'db.sqlite'}", "search")
    assert "checked again on first use" in caplog.text
