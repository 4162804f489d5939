"""Browser sessions: sign in once with an API key at /sign-in, then a signed cookie.

The cookie is stateless: itsdangerous signs `{key id, key prefix}` with a timestamp, so no
session table is needed. It ends when its lifetime (`auth.session_lifetime_s`) runs out, when
the key is revoked (every request checks the key is still active, trusted for
`auth.cache_s` as keys are), or when the browser signs out (the cookie is cleared; a copy taken
before stays valid until one of the other two). The cookie is HttpOnly, SameSite=Lax, and
Secure when the request came over https (or `auth.cookie_secure` says so).

The signing secret is `auth.session_secret`; production refuses to start without a real one.
In development (and the embedded mode) one is made on first use and kept in the data dir, so
sessions survive a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response
from starlette.types import Scope

from shared.apikeys import KeyInfo
from shared.config import Settings, weak_secret

log = logging.getLogger(__name__)

COOKIE_NAME = "capsearch_session"
SECRET_FILE = "session-secret"
SALT = "capsearch.browser-session"


def session_secret(settings: Settings) -> str:
    """The configured secret; in development one kept in the data dir (made once)."""
    configured = settings.auth.session_secret.get_secret_value()
    if configured or settings.environment == "production":
        if settings.environment == "production" and weak_secret(configured):
            raise ValueError("CAPSEARCH_AUTH__SESSION_SECRET is unset or a placeholder; set a "
                             "random secret of at least 16 characters (it signs browser "
                             "sessions; e.g. openssl rand -hex 32)")
        return configured
    return _kept_secret(Path(settings.data_dir) / SECRET_FILE)


def _kept_secret(path: Path) -> str:
    try:
        if path.is_file():
            kept = path.read_text().strip()
            if len(kept) >= 32:
                return kept
        path.parent.mkdir(parents=True, exist_ok=True)
        made = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(made)
        return made
    except OSError as exc:  # a read-only data dir: sessions then end with the process
        log.warning("cannot keep the session secret in %s (%s); browser sessions will not "
                    "survive a restart", path, exc)
        return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionRef:
    """Which key a session cookie was issued for."""

    key_id: int
    prefix: str


class SessionCookies:
    """Issues and reads the session cookie."""

    def __init__(self, secret: str, *, lifetime_s: float, secure: bool | None = None) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.lifetime_s = lifetime_s
        self.secure = secure

    def read(self, value: str | None) -> SessionRef | None:
        """The key a valid, unexpired cookie names; None for anything else."""
        if not value or len(value) > 512:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.lifetime_s)
            return SessionRef(key_id=int(data["k"]), prefix=str(data["p"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None

    def issue(self, response: Response, key: KeyInfo, scope: Scope) -> None:
        """Set a fresh session cookie for this key on the response."""
        response.set_cookie(COOKIE_NAME, self._serializer.dumps({"k": key.id, "p": key.prefix}),
                            max_age=int(self.lifetime_s), path="/", httponly=True,
                            samesite="lax", secure=self._secure(scope))

    def clear(self, response: Response, scope: Scope) -> None:
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax",
                               secure=self._secure(scope))

    def _secure(self, scope: Scope) -> bool:
        return self.secure if self.secure is not None else scope.get("scheme") == "https"


def make_session_cookies(settings: Settings) -> SessionCookies:
    return SessionCookies(session_secret(settings), lifetime_s=settings.auth.session_lifetime_s,
                          secure=settings.auth.cookie_secure)
