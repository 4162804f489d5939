"""Schema migrations with Alembic: bring a database to the head revision, or say how far it is.

The revisions live in `shared/db/migrations/versions/` (shipped with the package, so an
installed capsearch can upgrade its database). Who upgrades: `capsearch db upgrade` (and the
compose / Kubernetes one-shot that runs it), `capsearch stack up`, and the embedded mode for
its own SQLite file. Gateway, search and caption worker only check, and refuse a database that
is not at the head revision (`require_current`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from shared.db.fulltext import (
    FTS_TABLE,
    OCR_FTS_TABLE,
    POSTGRES_FTS_INDEX,
    POSTGRES_OCR_FTS_INDEX,
)
from shared.db.models import TAKEN_ORDER_INDEX
from shared.errors import SchemaOutOfDate

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# one upgrade at a time on a Postgres database (two migrate jobs, or one beside `db upgrade`)
ADVISORY_LOCK_ID = 7243001
UPGRADE_COMMAND = "capsearch db upgrade"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations; `connection` is the one env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The revision this code expects (the migrations form one line: one head)."""
    head = _scripts().get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


def base_revision() -> str:
    """The first revision: the schema as it was when migrations were introduced."""
    base = _scripts().get_base()
    assert base is not None, f"no migrations in {MIGRATIONS_DIR}"
    return base


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """What autogenerate compares: not the objects that live outside the models (full text of
    captions and of text read in photos: FTS5 tables and their shadow tables in SQLite,
    expression GIN indexes in Postgres; the capture-date order index, declared per dialect)."""
    if type_ == "table":
        return not (name or "").startswith((FTS_TABLE, OCR_FTS_TABLE))
    if type_ == "index":
        return name not in (POSTGRES_FTS_INDEX, POSTGRES_OCR_FTS_INDEX, TAKEN_ORDER_INDEX)
    return True


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (idempotent: at that revision already, a no-op)."""
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against this code's migrations."""

    current: str | None  # the revision recorded in the database (None: none)
    head: str
    has_tables: bool  # any table but Alembic's (a database created before migrations has some)
    known: bool  # `current` is one of this code's revisions

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        """None at the head revision, else one line: what is wrong and what to run."""
        if self.at_head:
            return None
        if self.current is None and not self.has_tables:
            return f"the database is empty (no capsearch schema): run `{UPGRADE_COMMAND}`"
        if self.current is None:
            return ("the database has tables but no migration revision (created before "
                    f"migrations): run `{UPGRADE_COMMAND}`")
        if not self.known:
            return (f"the database is at revision {self.current}, which this capsearch does "
                    f"not know (a newer version migrated it; this one expects {self.head})")
        return (f"the database is at revision {self.current}, behind the head revision "
                f"{self.head}: run `{UPGRADE_COMMAND}`")


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (connects: raises what the driver raises when it cannot)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        heads = context.get_current_heads()
        tables = set(inspect(connection).get_table_names()) - {context.version_table}
    current = heads[0] if heads else None
    known = current is not None and _known(current)
    return SchemaState(current=current, head=head_revision(), has_tables=bool(tables),
                       known=known)


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # alembic: "Can't locate revision identified by ..."
        return False


def require_current(engine: Engine) -> None:
    """Return if the database is at the head revision; raise SchemaOutOfDate (naming the
    command that fixes it) if not. A database that cannot be reached raises the driver's error.
    """
    problem = schema_state(engine).problem()
    if problem is not None:
        raise SchemaOutOfDate(problem)


def require_current_at_start(url: str, service: str) -> None:
    """A service's start-up check: exit with one line naming the fix when the database answers
    but is not at the head revision. A database that does not answer yet is left to the
    service's own retries (it starts, answers 503, and checks again on first contact)."""
    from shared.db.session import make_engine

    engine = make_engine(url)
    try:
        require_current(engine)
    except SchemaOutOfDate as exc:
        log.error("%s refuses to start: %s", service, exc.message)
        raise SystemExit(f"{service}: refusing to start: {exc.message}") from None
    except Exception as exc:  # unreachable (or not created yet): the service waits for it
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        log.warning("database not reachable at start-up, checked again on first use: %s",
                    detail)
    finally:
        engine.dispose()
