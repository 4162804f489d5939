"""`capsearch stack up|down|status`: each service as its own process."""

from __future__ import annotations

import argparse
import os

from capsearch.stack import load_pids, pid_file, save_pids, start_stack, stop_stack
from shared.config import get_settings


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    running = [p for p in load_pids(settings) if p.alive()]
    if args.action == "status":
        if not running:
            print("stack: not running")
        for p in running:
            print(f"{p.name:8s} pid {p.pid}  log {p.log_path}")
        return 0
    if args.action == "down":
        stop_stack(running)
        pid_file(settings).unlink(missing_ok=True)
        print(f"stack: stopped {len(running)} services")
        return 0
    if running:
        print("stack: already running (capsearch stack down first)")
        return 1
    log_dir = settings.data_dir / "stack"
    env = dict(os.environ)
    env.setdefault("CAPSEARCH_QUEUE_BACKEND", "celery")
    procs = start_stack(settings, env, log_dir, timeout=args.timeout)
    save_pids(settings, procs)
    for p in procs:
        p.popen = None  # detached: they outlive this command
    print(f"stack: up — gateway {settings.url}, logs in {log_dir}")
    return 0
