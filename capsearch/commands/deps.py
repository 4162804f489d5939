"""`capsearch deps up|down|status`: PostgreSQL, Redis and an S3 server from wheels, alone.

What `capsearch stack up --with-deps` starts before the four services; CI starts only these
(`.ci/run`) and runs the tests against them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capsearch.deps import DEPS, running_deps, start_deps, stop_deps
from shared.config import get_settings
from shared.stackstate import DepsState, read_deps


def data_dir_of(args: argparse.Namespace) -> Path:
    """`--data-dir`, else CAPSEARCH_DATA_DIR (else ~/.capsearch), absolute."""
    return Path(args.data_dir or get_settings().data_dir).expanduser().resolve()


def describe(state: DepsState, running: dict[str, bool]) -> list[str]:
    """One line per dependency: where it listens and whether it runs (no credentials)."""
    lines = []
    if state.postgres is not None:
        lines.append(f"postgres  127.0.0.1:{state.postgres.port}  database "
                     f"{state.postgres.database}")
    if state.redis is not None:
        lines.append(f"redis     127.0.0.1:{state.redis.port}")
    if state.s3 is not None:
        lines.append(f"s3        {state.s3.endpoint}")
    return [f"{line:42s} {'running' if running[line.split()[0]] else 'stopped'}"
            for line in lines]


def status_json(state: DepsState, running: dict[str, bool]) -> dict[str, object]:
    """The record with connection URLs (credentials included: for scripts, such as CI)."""
    out: dict[str, object] = {}
    if state.postgres is not None:
        out["postgres"] = {"running": running["postgres"], "port": state.postgres.port,
                           "url": state.postgres.url(),
                           "admin_url": state.postgres.url("postgres")}
    if state.redis is not None:
        out["redis"] = {"running": running["redis"], "port": state.redis.port,
                        "url": state.redis.url()}
    if state.s3 is not None:
        out["s3"] = {"running": running["s3"], "endpoint": state.s3.endpoint,
                     "access_key": state.s3.access_key, "secret_key": state.s3.secret_key}
    return out


def run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    names = args.only or list(DEPS)
    if args.action == "up":
        state, started = start_deps(data_dir, names)
        print(f"deps: started {', '.join(started) or 'nothing (already running)'}; "
              f"state in {data_dir / 'deps'}")
        for line in describe(state, running_deps(data_dir)):
            print(f"  {line}")
        print(f"  commands run with CAPSEARCH_DATA_DIR={data_dir} use them")
        return 0
    if args.action == "down":
        stopped = stop_deps(data_dir, names)
        print(f"deps: stopped {', '.join(stopped) or 'nothing (none running)'}")
        return 0
    state = read_deps(data_dir) or DepsState()
    running = running_deps(data_dir)
    if args.json:
        print(json.dumps(status_json(state, running)))
        return 0
    if not running:
        print(f"deps: none recorded in {data_dir / 'deps'}")
    for line in describe(state, running):
        print(line)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deps", help="PostgreSQL, Redis and S3 from wheels, under the data dir")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--data-dir", type=Path, help="where they keep their files "
                   "(default: CAPSEARCH_DATA_DIR, else ~/.capsearch)")
    p.add_argument("--only", nargs="+", choices=DEPS, metavar="NAME",
                   help=f"only these of {', '.join(DEPS)}")
    p.add_argument("--json", action="store_true", help="status: JSON with connection URLs")
    p.set_defaults(func=run)
