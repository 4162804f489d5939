"""`capsearch serve`: without keys on loopback only; anywhere else keys are required."""

from __future__ import annotations

import pytest

from capsearch.commands.serve import keys_required


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_runs_without_keys_unless_asked(host: str) -> None:
    assert keys_required(host, None) is False
    assert keys_required(host, False) is False
    assert keys_required(host, True) is True


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_any_other_address_requires_keys(host: str) -> None:
    assert keys_required(host, None) is True
    assert keys_required(host, True) is True
    with pytest.raises(ValueError, match="127.0.0.1"):
        keys_required(host, False)
