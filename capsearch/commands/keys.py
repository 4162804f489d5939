"""`capsearch keys create|list|revoke`: API keys of the gateway, straight in the database."""

from __future__ import annotations

import argparse
import json
import sys

from capsearch.database import open_database
from shared.apikeys import SCOPES, KeyInfo, create_key, list_keys, revoke_key
from shared.config import Settings, get_settings


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings, for `--data-dir` when given (with what a stack recorded there)."""
    if getattr(args, "data_dir", None):
        return Settings(data_dir=args.data_dir.resolve())
    return get_settings()


def _row(info: KeyInfo) -> dict[str, object]:
    return {"id": info.id, "prefix": info.prefix, "name": info.name,
            "scopes": sorted(info.scopes), "active": info.active,
            "created_at": info.created_at.isoformat(),
            "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
            "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None}


def run_create(args: argparse.Namespace) -> int:
    scopes = args.scopes or ["search"]
    with open_database(settings_for(args)) as factory:
        issued = create_key(factory, name=args.name or "", scopes=scopes)
    if args.json:
        print(json.dumps({"key": issued.key, **_row(issued.info)}))
        return 0
    print(f"created key {issued.info.prefix} ({' '.join(sorted(issued.info.scopes))}); "
          "it is shown only once:", file=sys.stderr)
    print(issued.key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_database(settings_for(args)) as factory:
        keys = list_keys(factory, include_revoked=args.all)
    if args.json:
        print(json.dumps([_row(k) for k in keys]))
        return 0
    if not keys:
        print("no API keys (capsearch keys create --scope search --scope write)")
    for k in keys:
        state = "active" if k.active else "revoked"
        used = k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "never"
        print(f"{k.prefix}  {state:7s}  {' '.join(sorted(k.scopes)):20s}  last used {used:16s}"
              f"  {k.name}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with open_database(settings_for(args)) as factory:
        info = revoke_key(factory, args.key)
    print(f"revoked {info.prefix} ({info.name or 'unnamed'}); gateways stop accepting it "
          "within CAPSEARCH_AUTH__CACHE_S seconds")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

    p = sub.add_parser("keys", help="create, list and revoke API keys (in the database)")
    keys = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = keys.add_parser("create", help="mint a key; it is printed once")
    c.add_argument("--name", default="", help="who or what the key is for")
    c.add_argument("--scope", dest="scopes", action="append", choices=SCOPES,
                   help="search, write or admin (repeatable; default search; admin = all)")
    c.set_defaults(func=run_create)
    ls = keys.add_parser("list", help="keys with prefix, scopes and last use (never the key)")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    ls.set_defaults(func=run_list)
    r = keys.add_parser("revoke", help="revoke a key by its prefix (csk_XXXXXXXX) or id")
    r.add_argument("key")
    r.set_defaults(func=run_revoke)
    for q in (c, ls, r):
        q.add_argument("--data-dir", type=Path, help="the embedded instance's state folder")
        q.add_argument("--json", action="store_true", help="machine-readable output")
