"""API keys: minted here, stored only as sha256 digests, checked by the gateway.

A key is `csk_` + 43 URL-safe characters (256 random bits), shown once when created. The
database keeps its sha256 and its first 12 characters (`prefix`), which find the row in one
indexed lookup and name the key in `capsearch keys list`. A high-entropy key needs no slow
password hash: sha256 of 256 random bits cannot be brute-forced.

Scopes: `search` (read and search), `write` (upload, delete), `admin` (rebuild; implies both).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import ApiKey
from shared.db.models import aware, utcnow
from shared.errors import NotFound, ValidationFailed

Scope = Literal["search", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_PREFIX = "csk_"
PREFIX_CHARS = 12
KEY_CHARS = len(KEY_PREFIX) + 43
# last_used_at is written at most this often per key (not on every request)
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the key itself."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `key` is the secret, shown once; `info` is what the database keeps."""

    key: str
    info: KeyInfo


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Validated scopes; unknown names are refused."""
    chosen = frozenset(s.strip().lower() for s in scopes if s.strip())
    unknown = chosen - set(SCOPES)
    if unknown:
        raise ValidationFailed(f"unknown scopes {sorted(unknown)}; use {', '.join(SCOPES)}")
    if not chosen:
        raise ValidationFailed(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return chosen


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """What a key may do: `admin` implies every scope."""
    granted = frozenset(scopes)
    return frozenset(SCOPES) if "admin" in granted else granted


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(id=row.id, name=row.name, prefix=row.prefix,
                   scopes=frozenset(row.scopes.split()), created_at=row.created_at,
                   last_used_at=row.last_used_at, revoked_at=row.revoked_at)


def create_key(session_factory: sessionmaker[Session], *, name: str, scopes: Iterable[str]
               ) -> IssuedKey:
    """Mint and store a key; the returned secret is not recoverable afterwards."""
    granted = parse_scopes(scopes)
    for _ in range(5):  # a 48-bit prefix collision is astronomically rare; retry anyway
        key = mint_key()
        try:
            with session_factory.begin() as session:
                row = ApiKey(name=name.strip()[:128], prefix=key[:PREFIX_CHARS],
                             key_hash=hash_key(key),
                             scopes=" ".join(s for s in SCOPES if s in granted))
                session.add(row)
                session.flush()
                return IssuedKey(key=key, info=_info(row))
        except IntegrityError:
            continue
    raise RuntimeError("could not mint a unique key prefix")


def list_keys(session_factory: sessionmaker[Session], *, include_revoked: bool = True
              ) -> list[KeyInfo]:
    with session_factory() as session:
        stmt = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        return [_info(row) for row in session.scalars(stmt)]


def revoke_key(session_factory: sessionmaker[Session], ref: str) -> KeyInfo:
    """Revoke by prefix (or the whole key, or the numeric id); revoking twice is a no-op."""
    ref = ref.strip()
    with session_factory.begin() as session:
        if ref.isdigit():
            row = session.get(ApiKey, int(ref))
        else:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == ref[:PREFIX_CHARS]))
        if row is None or (len(ref) > PREFIX_CHARS and row.prefix != ref[:PREFIX_CHARS]):
            raise NotFound(f"no API key {ref[:PREFIX_CHARS]!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        session.flush()
        return _info(row)


def verify_key(session_factory: sessionmaker[Session], key: str) -> KeyInfo | None:
    """The active key whose secret this is, or None (unknown, malformed or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) != KEY_CHARS:
        return None
    with session_factory() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == key[:PREFIX_CHARS]))
        if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
            return None
        if row.revoked_at is not None:
            return None
        info = _info(row)
    now = utcnow()
    last = info.last_used_at
    if last is None or aware(last) < now - TOUCH_EVERY:
        with session_factory.begin() as session:
            session.execute(update(ApiKey).where(ApiKey.id == info.id)
                            .values(last_used_at=now))
    return info


def active_key(session_factory: sessionmaker[Session], key_id: int, prefix: str
               ) -> KeyInfo | None:
    """The key with this id and prefix if it is still active (a browser session names its key
    so; revoking the key ends the session), else None."""
    with session_factory() as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.prefix != prefix or row.revoked_at is not None:
            return None
        return _info(row)
