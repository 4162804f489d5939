"""The Dockerfile: device-selected final stage, pinned bases, tini, non-root, deps before code."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.deploy.manifests import DOCKERFILE, REPO

LOCK = REPO / "deploy" / "docker" / "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_device_argument_selects_the_final_stage() -> None:
    steps = _instructions()
    assert ("ARG", "DEVICE=cpu") in steps
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms[-1] == "prod-${DEVICE} AS prod"
    stages = {rest.split(" AS ")[-1] for rest in froms}
    assert {"prod-cpu", "prod-cuda"} <= stages


def test_base_images_are_pinned() -> None:
    steps = _instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])


def test_cpu_torch_comes_from_the_pytorch_cpu_index() -> None:
    text = DOCKERFILE.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "torchvision" not in text and "timm" not in text


def test_runs_unprivileged_under_tini_with_a_healthcheck() -> None:
    steps = _instructions()
    words = [w for w, _ in steps]
    assert ("ENTRYPOINT", '["tini", "--"]') in steps
    user = [rest for word, rest in steps if word == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in words
    assert ("CMD", '["python", "-m", "services.gateway"]') in steps


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    steps = _instructions()
    lock_install = next(
        i for i, (w, r) in enumerate(steps) if w == "RUN" and "requirements.lock" in r
    )
    code_copies = [
        i
        for i, (w, r) in enumerate(steps)
        if w == "COPY" and r.split()[0] in ("shared", "services", "capsearch", ".")
    ]
    assert code_copies and lock_install < min(code_copies)


def test_lock_pins_every_runtime_dependency() -> None:
    """A dependency added to pyproject.toml fails here until `python -m deploy.docker.lock`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    for text in project["dependencies"]:
        name = canonicalize_name(Requirement(text).name)
        if name != "torch":  # installed per device by the Dockerfile
            assert name in pins, f"{name} is not in deploy/docker/requirements.lock"
    assert "torch" not in pins


def test_build_context_keeps_what_the_image_copies() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "!deploy/docker" in ignored
    for needed in ("shared", "services", "capsearch", "pyproject.toml", "README.md"):
        assert needed not in ignored
