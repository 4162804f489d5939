"""Offline helpers for deploy/validate.sh (kustomize itself renders the overlays).

python -m deploy.checks split RENDERED.yaml KIND OUTDIR
    one file per object of KIND, for check-jsonschema (which validates one object a file)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def split(rendered: Path, kind: str, outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in yaml.safe_load_all(rendered.read_text()):
        if doc and doc.get("kind") == kind:
            path = outdir / f"{kind.lower()}-{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "split":
        written = split(Path(argv[1]), argv[2], Path(argv[3]))
        sys.stdout.write("".join(f"{p}\n" for p in written))
        return 0 if written else 1
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
