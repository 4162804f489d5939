"""`capsearch keys create|list|revoke`: API keys of the gateway, straight in the database."""

from __future__ import annotations

import argparse
import json
import sys

from capsearch.commands.args import add_actions, settings_for
from capsearch.database import open_database
from shared.apikeys import SCOPES, KeyInfo, create_key, list_keys, revoke_key


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

    parsers = add_actions(sub, "keys", "create, list and revoke API keys (in the database)", {
        "create": ("mint a key; it is printed once", run_create),
        "list": ("keys with prefix, scopes and last use (never the key)", run_list),
        "revoke": ("revoke a key by its prefix (csk_XXXXXXXX) or id", run_revoke),
    })
    create = parsers["create"]
    create.add_argument("--name", default="", help="who or what the key is for")
    create.add_argument("--scope", dest="scopes", action="append", choices=SCOPES,
                        help="search, write or admin (repeatable; default search; admin = all)")
    parsers["list"].add_argument("--all", action="store_true", help="include revoked keys")
    parsers["revoke"].add_argument("key")
    for q in parsers.values():
        q.add_argument("--data-dir", type=Path, help="the embedded instance's state folder")
        q.add_argument("--json", action="store_true", help="machine-readable output")
