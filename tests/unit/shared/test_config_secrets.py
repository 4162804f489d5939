"""Production refuses placeholder secrets, an unset service token and switched-off keys."""

from __future__ import annotations

import pytest

from shared.config import Settings

GOOD = {"environment": "production", "service_token": "0123456789abcdef0123456789abcdef"}


def test_production_with_a_real_token_is_accepted() -> None:
    assert Settings(**GOOD).service_token.get_secret_value() == GOOD["service_token"]


@pytest.mark.parametrize("token", ["", "changeme", "secret", "short-token"])
def test_production_refuses_a_placeholder_service_token(token: str) -> None:
    with pytest.raises(ValueError, match="CAPSEARCH_SERVICE_TOKEN"):
        Settings(**{**GOOD, "service_token": token})


def test_development_runs_without_a_token() -> None:
    assert Settings().service_token.get_secret_value() == ""


def test_production_refuses_keys_switched_off() -> None:
    with pytest.raises(ValueError, match="AUTH__ENABLED"):
        Settings(**GOOD, auth={"enabled": False})


def test_settings_read_the_new_groups_from_the_environment(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("CAPSEARCH_RATE_LIMIT__RATE_PER_S", "7.5")
    monkeypatch.setenv("CAPSEARCH_AUTH__CACHE_S", "0")
    monkeypatch.setenv("CAPSEARCH_IMPORT_ROOTS", '["/srv/photos"]')
    settings = Settings()
    assert settings.rate_limit.rate_per_s == 7.5
    assert settings.auth.cache_s == 0
    assert [str(p) for p in settings.import_roots] == ["/srv/photos"]
