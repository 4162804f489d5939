"""Starting without the database: the schema is created once Postgres answers, not before.

The gateway must come up (and answer 503 with a clear error) while Postgres is down, then
recover by itself. `SchemaGate.ensure()` creates the tables the first time the database
answers; until then it raises `DatabaseUnavailable`, retrying at most once per `retry_s` so a
burst of requests does not become a burst of connection attempts.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from shared.db import create_schema
from shared.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

UNAVAILABLE = "the database is unavailable; try again shortly"


class SchemaGate:
    """Creates the schema on first contact with the database; 503 until it can."""

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
                create_schema(self.engine)
            except Exception as exc:
                # the detail (host, port, driver message) goes to the log, not to callers
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                log.warning("database unavailable, schema not created yet: %s", detail)
                self._last_error = UNAVAILABLE
                raise DatabaseUnavailable(UNAVAILABLE) from exc
            self.ready = True
            self._last_error = None
            log.info("database schema ready")
