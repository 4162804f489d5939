"""`capsearch ingest --watch DIR`: keep one folder indexed until interrupted."""

from __future__ import annotations

import argparse
import sys

from capsearch.client import CapsearchClient
from capsearch.watch import FolderWatcher, WatchState, default_state_path
from shared.config import get_settings
from shared.logging import configure_logging


def run_watch(args: argparse.Namespace) -> int:
    if len(args.paths) != 1 or not args.paths[0].is_dir():
        print("capsearch: --watch takes exactly one folder", file=sys.stderr)
        return 2
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    root = args.paths[0].resolve()
    state_path = args.state or default_state_path(settings.data_dir, root)
    state = WatchState.load(state_path, root)
    print(f"watching {root} every {args.interval:g} s (state {state_path}); Ctrl-C stops",
          file=sys.stderr)
    with CapsearchClient(args.url or settings.url) as client:
        watcher = FolderWatcher(client, root, state, batch=max(1, args.batch))
        watcher.run(interval_s=max(0.5, args.interval))
    return 0
