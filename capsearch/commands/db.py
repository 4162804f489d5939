"""`capsearch db upgrade|check`: migrate the settings' database, or say whether it is current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import make_url

from capsearch.commands.args import add_actions, settings_for
from shared.config import Settings
from shared.db import make_engine
from shared.db.migrate import schema_state, upgrade


def _where(settings: Settings) -> str:
    return make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)


def _unreachable(settings: Settings, exc: Exception) -> int:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    print(f"capsearch: cannot reach the database {_where(settings)}: {detail}", file=sys.stderr)
    return 1


def run_upgrade(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        try:
            before = schema_state(engine).current
            upgrade(engine, args.revision)
            after = schema_state(engine).current
        except Exception as exc:
            if type(exc).__module__.startswith("alembic"):
                raise
            return _unreachable(settings, exc)
    finally:
        engine.dispose()
    if before == after:
        print(f"database {_where(settings)}: already at revision {after}")
    else:
        print(f"database {_where(settings)}: upgraded from {before or 'nothing'} to {after}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        state = schema_state(engine)
    except Exception as exc:
        return _unreachable(settings, exc)
    finally:
        engine.dispose()
    problem = state.problem()
    if problem is not None:
        print(f"capsearch: {problem}", file=sys.stderr)
        return 1
    print(f"database {_where(settings)}: at the head revision {state.head}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parsers = add_actions(sub, "db", "the database schema: upgrade it, check it is current", {
        "upgrade": ("migrate the database to the head revision (idempotent)", run_upgrade),
        "check": ("exit 0 only when the database is at the head revision", run_check),
    })
    parsers["upgrade"].add_argument("--revision", default="head",
                                    help="migrate to this revision instead")
    for q in parsers.values():
        q.add_argument("--data-dir", type=Path, help="the instance's state folder")
