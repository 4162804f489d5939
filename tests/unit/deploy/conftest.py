"""Fixtures: the overlays rendered once per session by `kubectl kustomize`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy.manifests import OVERLAYS, load_compose, render_overlay


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_overlay(name) for name in OVERLAYS}


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(
    request: pytest.FixtureRequest, rendered: dict[str, list[dict[str, Any]]]
) -> tuple[str, list[dict[str, Any]]]:
    """(overlay name, its rendered objects), once per overlay."""
    return request.param, rendered[request.param]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose()
