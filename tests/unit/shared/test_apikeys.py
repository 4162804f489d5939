"""API keys: minted once, stored as sha256 only, found by prefix, revocable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.apikeys import (
    KEY_PREFIX,
    PREFIX_CHARS,
    create_key,
    effective_scopes,
    hash_key,
    list_keys,
    revoke_key,
    verify_key,
)
from shared.db import ApiKey, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.errors import NotFound, ValidationFailed


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_the_database_never_holds_the_key(factory: sessionmaker[Session]) -> None:
    issued = create_key(factory, name="laptop", scopes=["search", "write"])
    assert issued.key.startswith(KEY_PREFIX) and len(issued.key) > 40
    with factory() as session:
        row = session.scalar(select(ApiKey))
        dump = " ".join(str(v) for v in session.execute(text("SELECT * FROM api_keys")).one())
    assert row is not None and row.key_hash == hash_key(issued.key)
    assert issued.key not in dump
    assert row.prefix == issued.key[:PREFIX_CHARS]


def test_verify_finds_the_key_and_records_its_use(factory: sessionmaker[Session]) -> None:
    issued = create_key(factory, name="a", scopes=["search"])
    info = verify_key(factory, issued.key)
    assert info is not None and info.scopes == frozenset({"search"})
    assert list_keys(factory)[0].last_used_at is not None


@pytest.mark.parametrize("mangle", [
    lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # same prefix, wrong secret
    lambda k: k[:-1],
    lambda k: "",
    lambda k: k.replace(KEY_PREFIX, "xyz_"),
])
def test_verify_refuses_anything_but_the_exact_key(factory: sessionmaker[Session],
                                                   mangle: object) -> None:
    issued = create_key(factory, name="a", scopes=["search"])
    assert verify_key(factory, mangle(issued.key)) is None  # type: ignore[operator]


def test_revoked_keys_stop_verifying_and_stay_listed(factory: sessionmaker[Session]) -> None:
    issued = create_key(factory, name="old", scopes=["write"])
    info = revoke_key(factory, issued.info.prefix)
    assert not info.active
    assert verify_key(factory, issued.key) is None
    assert [k.prefix for k in list_keys(factory)] == [issued.info.prefix]
    assert list_keys(factory, include_revoked=False) == []
    assert not revoke_key(factory, str(issued.info.id)).active  # twice is fine


def test_revoking_an_unknown_key_is_not_found(factory: sessionmaker[Session]) -> None:
    with pytest.raises(NotFound):
        revoke_key(factory, "csk_nothere0")


@pytest.mark.parametrize("scopes", [[], ["root"], ["search", "delete"]])
def test_scopes_are_validated(factory: sessionmaker[Session], scopes: list[str]) -> None:
    with pytest.raises(ValidationFailed):
        create_key(factory, name="x", scopes=scopes)


def test_admin_implies_every_scope() -> None:
    assert effective_scopes({"admin"}) == {"search", "write", "admin"}
    assert effective_scopes({"search"}) == {"search"}
