"""Offline checks on rendered manifests, used by deploy/validate.sh and tests/unit/deploy.

python -m deploy.checks compare OVERLAY_DIR KUSTOMIZE_OUTPUT.yaml
    deploy.render's output for OVERLAY_DIR equals real kustomize's (order aside)
python -m deploy.checks split RENDERED.yaml KIND OUTDIR
    one file per object of KIND, for check-jsonschema (which validates one object a file)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from deploy.render import Resource, render

Key = tuple[str, str, str, str]


def keyed(docs: Iterable[Resource]) -> dict[Key, Resource]:
    out: dict[Key, Resource] = {}
    for doc in docs:
        meta = doc.get("metadata", {})
        out[(doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return out


def differences(expected: Iterable[Resource], actual: Iterable[Resource]) -> list[str]:
    """Human-readable differences between two sets of objects (empty when equal)."""
    want, got = keyed(expected), keyed(actual)
    problems = [f"only in kustomize: {k}" for k in sorted(want.keys() - got.keys())]
    problems += [f"only in deploy.render: {k}" for k in sorted(got.keys() - want.keys())]
    for key in sorted(want.keys() & got.keys()):
        problems += [f"{key} {line}" for line in _diff(want[key], got[key], "")]
    return problems


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {a.get(k, '<absent>')!r} != {b.get(k, '<absent>')!r}")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            line
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for line in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


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
    if len(argv) == 3 and argv[0] == "compare":
        kustomized = [d for d in yaml.safe_load_all(Path(argv[2]).read_text()) if d]
        problems = differences(kustomized, render(argv[1]))
        for line in problems:
            sys.stderr.write(f"  {line}\n")
        return 1 if problems else 0
    if len(argv) == 4 and argv[0] == "split":
        written = split(Path(argv[1]), argv[2], Path(argv[3]))
        sys.stdout.write("".join(f"{p}\n" for p in written))
        return 0 if written else 1
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
