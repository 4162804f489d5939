"""Migrations on real Postgres: `capsearch db check|upgrade`, head = the models, rows kept from
the baseline to the head, concurrent upgrades."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from shared.db import Base, make_engine
from shared.db.migrate import base_revision, head_revision, include_name, schema_state, upgrade
from shared.db.models import TAKEN_ORDER_INDEX
from tests.integration.conftest import PG_ADMIN_URL
from tests.support.migrations import fill_every_table, missing_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty Postgres database (dropped afterwards)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"capsearch_mig_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def capsearch_db(action: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env["CAPSEARCH_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "capsearch", "db", action], env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_fails_on_an_empty_database_upgrade_fixes_it(empty_database: str) -> None:
    check = capsearch_db("check", empty_database)
    assert check.returncode != 0
    assert check.stderr.strip().count("\n") == 0  # one line
    assert "empty" in check.stderr and "run `capsearch db upgrade`" in check.stderr

    up = capsearch_db("upgrade", empty_database)
    assert up.returncode == 0, up.stderr
    assert f"upgraded from nothing to {head_revision()}" in up.stdout

    check = capsearch_db("check", empty_database)
    assert check.returncode == 0, check.stderr
    assert head_revision() in check.stdout


def test_head_is_the_models_on_postgres(empty_database: str) -> None:
    engine = make_engine(empty_database)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_name": include_name, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        indexes = {r[0] for r in conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'captions'"))}
        texts = {r[0] for r in conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'image_texts'"))}
    assert "ix_captions_text_fts" in indexes  # full-text search, outside the models
    assert "ix_image_texts_words_fts" in texts  # and of the text read in photos
    engine.dispose()


def test_sort_taken_reads_its_index_without_a_sort_step(empty_database: str) -> None:
    """`ORDER BY taken_at DESC NULLS LAST, id DESC` (GET /v1/images?sort=taken) is the order
    of revision 0002's index, NULLs last included."""
    engine = make_engine(empty_database)
    upgrade(engine)
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # an empty table would be scanned
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT id FROM images ORDER BY taken_at DESC NULLS LAST, id DESC "
            "LIMIT 50")))
    assert TAKEN_ORDER_INDEX in plan and "Sort" not in plan, plan
    engine.dispose()


def test_upgrading_from_the_baseline_keeps_every_row(empty_database: str) -> None:
    engine = make_engine(empty_database)
    upgrade(engine, base_revision())
    assert schema_state(engine).current == base_revision()
    written = fill_every_table(engine)
    assert {"images", "captions", "embeddings", "index_versions", "centroids", "memberships",
            "api_keys", "imports"} <= set(written)
    upgrade(engine)
    assert schema_state(engine).at_head
    assert missing_rows(engine, written) == []
    with engine.connect() as conn:  # revision 0002's capture date: null until backfilled
        taken = [r[0] for r in conn.execute(text("SELECT taken_at FROM images ORDER BY id"))]
        # revision 0004: photos from before the OCR stage are waiting, not lost
        assert conn.execute(text("SELECT count(*) FROM image_texts")).scalar() == 0
    assert taken == [None] * len(written["images"])
    engine.dispose()


def test_concurrent_upgrades_both_succeed(empty_database: str) -> None:
    """Two migrate jobs at once (say a compose restart beside a manual run): the advisory lock
    makes the second wait, then find the head and do nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env["CAPSEARCH_DATABASE_URL"] = empty_database
    jobs = [subprocess.Popen([sys.executable, "-m", "capsearch", "db", "upgrade"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], results
    engine = make_engine(empty_database)
    assert schema_state(engine).at_head
    engine.dispose()
