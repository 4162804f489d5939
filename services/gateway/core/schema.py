"""Starting without the database: the schema is checked once Postgres answers, not before.

The gateway must come up (and answer 503 with a clear error) while Postgres is down, then
recover by itself. `SchemaGate.ensure()` checks that the database is at the head migration
revision the first time it answers (`capsearch db upgrade` migrates it; the gateway never
does); until then it raises `DatabaseUnavailable`, retrying at most once per `retry_s` so a
burst of requests does not become a burst of connection attempts.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from shared.db.migrate import UPGRADE_COMMAND, require_current
from shared.errors import DatabaseUnavailable, SchemaOutOfDate

log = logging.getLogger(__name__)

UNAVAILABLE = "the database is unavailable; try again shortly"
OUT_OF_DATE = f"the database schema is not up to date; an operator must run `{UPGRADE_COMMAND}`"


class SchemaGate:
    """Checks the schema on first contact with the database; 503 until it is current."""

    def __init__(self, engine: Engine, *, retry_s: float = 1.0) -> None:
        self.engine = engine
        self.retry_s = retry_s
        self.ready = False
        self._lock = threading.Lock()
        self._last_try = float("-inf")
        self._last_error: str | None = None

    def ensure(self) -> None:
        """Return once the schema exists; raise DatabaseUnavailable while it cannot (blocking)."""
        if self.ready:
            return
        with self._lock:
            if self.ready:
                return
            now = time.monotonic()
            if self._last_error is not None and now - self._last_try < self.retry_s:
                raise DatabaseUnavailable(self._last_error)
            self._last_try = now
            try:
                require_current(self.engine)
            except SchemaOutOfDate as exc:
                log.error("database schema not current: %s", exc.message)
                self._last_error = OUT_OF_DATE
                raise DatabaseUnavailable(OUT_OF_DATE) from exc
            except Exception as exc:
                # the detail (host, port, driver message) goes to the log, not to callers
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                log.warning("database unavailable, schema not checked yet: %s", detail)
                self._last_error = UNAVAILABLE
                raise DatabaseUnavailable(UNAVAILABLE) from exc
            self.ready = True
            self._last_error = None
            log.info("database schema at the head revision")
