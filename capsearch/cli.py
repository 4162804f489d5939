"""The `capsearch` command: serve, ingest, search, image, demo, eval, stack, deps, keys, db,
doctor, duplicates, train."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from capsearch.commands import (
    db,
    demo,
    deps,
    doctor,
    duplicates,
    eval_captions,
    evaluate,
    image,
    ingest,
    keys,
    search,
    serve,
    stack,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsearch",
        description="Natural-language search over uncaptioned photos.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run everything in one process (embedded mode)")
    p.add_argument("--data-dir", type=Path, help="where the instance keeps its state")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.set_defaults(func=serve.run)

    p = sub.add_parser("ingest", help="upload a folder (recursively) and wait until indexed")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--url", default=None, help="gateway URL (default: CAPSEARCH_URL)")
    p.add_argument("--batch", type=int, default=16, help="files per upload request")
    p.add_argument("--no-wait", action="store_true", help="return once uploads are accepted")
    p.add_argument("--watch", action="store_true",
                   help="keep ONE folder indexed: new, changed and deleted files, until Ctrl-C")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between --watch scans")
    p.add_argument("--state", type=Path, default=None,
                   help="--watch state file (default: under the data dir; resumable)")
    p.set_defaults(func=ingest.run)

    p = sub.add_parser("search", help="search the photos with a text query (or a photo)")
    p.add_argument("query", nargs="?", default=None)
    p.add_argument("--similar-file", type=Path, default=None, metavar="PATH",
                   help="find photos like this local photo instead (it is not uploaded)")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--min-score", type=float, default=None)
    search.add_order_arguments(p)
    p.add_argument("--url", default=None, help="gateway URL (default: CAPSEARCH_URL)")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")
    p.set_defaults(func=search.run)

    p = sub.add_parser("demo", help="index a folder in embedded mode and run a few queries")
    p.add_argument("folder", nargs="?", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, help="keep the demo's state here (default: temp)")
    p.add_argument("-q", "--query", action="append", dest="queries",
                   help="a query to run (repeatable; default: a few built-in ones)")
    p.set_defaults(func=demo.run)

    p = sub.add_parser("eval", help="measure quality")
    eval_sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    r = eval_sub.add_parser("retrieval", help="R@1/5/10 and median rank with captions as queries")
    r.add_argument("--images", type=Path, required=True)
    r.add_argument("--captions", type=Path, required=True)
    r.add_argument("--captioner", default=None, help="override CAPSEARCH_CAPTIONER")
    r.add_argument("--max-queries", type=int, default=None, help="use at most N captions")
    r.add_argument("--json", action="store_true", help="last line: one JSON object")
    r.add_argument("--hybrid", choices=["on", "off"], default=None,
                   help="fuse caption full-text matches into the ranking (default: setting)")
    r.add_argument("--representation", choices=["caption", "image", "fused"], default=None,
                   help="override CAPSEARCH_REPRESENTATION (what the index serves)")
    r.set_defaults(func=evaluate.run_retrieval)
    eval_captions.add_parser(eval_sub)

    stack.add_parser(sub)
    deps.add_parser(sub)

    keys.add_parsers(sub)
    db.add_parser(sub)
    doctor.add_parser(sub)
    image.add_parser(sub)
    duplicates.add_parser(sub)
    train.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a CLI prints one clear line, not a traceback, for known errors
        from capsearch.client import ApiError
        from capsearch.deps import DepsError
        from shared.errors import CapsearchError

        if isinstance(exc, ApiError | CapsearchError | DepsError | FileNotFoundError
                      | ValueError | TimeoutError):
            print(f"capsearch: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
