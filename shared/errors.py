"""The one error contract of capsearch.

Every failure a caller can act on is a `CapsearchError` with an HTTP status and a stable code;
the web edge renders it once as `{"error": {"code": ..., "message": ...}}`.

    CapsearchError (500, internal)
    ├── BadRequest (400, bad_request)
    │   ├── InvalidImage (415, invalid_image)
    │   ├── PayloadTooLarge (413, payload_too_large)
    │   └── ValidationFailed (422, validation_error)
    ├── Unauthorized (401, unauthorized)                no or a bad API key
    ├── Forbidden (403, forbidden)                      the key lacks the route's scope
    ├── NotFound (404, not_found)
    ├── Conflict (409, conflict)
    ├── RateLimited (429, rate_limited)                 with a Retry-After header
    └── DependencyError (502, dependency_error)        a downstream service answered badly
        ├── DependencyUnavailable (503, dependency_unavailable)   it is down / unreachable
        │   └── DatabaseUnavailable (503, database_unavailable)
        │       └── SchemaOutOfDate (503, schema_out_of_date)   not at the head revision
        └── DependencyTimeout (504, dependency_timeout)          it did not answer in time
"""

from __future__ import annotations

import math


class CapsearchError(Exception):
    """Base of every error a caller can act on; subclasses name their status and code."""

    status_code = 500
    code = "internal"
    # extra response headers (Retry-After, WWW-Authenticate), rendered by the web edge
    headers: dict[str, str] | None = None

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(CapsearchError, status=400, code="bad_request"):
    pass


class InvalidImage(BadRequest, status=415, code="invalid_image"):
    pass


class PayloadTooLarge(BadRequest, status=413, code="payload_too_large"):
    pass


class ValidationFailed(BadRequest, status=422, code="validation_error"):
    pass


class Unauthorized(CapsearchError, status=401, code="unauthorized"):
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(CapsearchError, status=403, code="forbidden"):
    pass


class NotFound(CapsearchError, status=404, code="not_found"):
    pass


class Conflict(CapsearchError, status=409, code="conflict"):
    pass


class RateLimited(CapsearchError, status=429, code="rate_limited"):
    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        # whole seconds, rounded up: a client that waits this long gets a token
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class DependencyError(CapsearchError, status=502, code="dependency_error"):
    pass


class DependencyUnavailable(DependencyError, status=503, code="dependency_unavailable"):
    pass


class DependencyTimeout(DependencyError, status=504, code="dependency_timeout"):
    pass


class DatabaseUnavailable(DependencyUnavailable, code="database_unavailable"):
    pass


class SchemaOutOfDate(DatabaseUnavailable, code="schema_out_of_date"):
    """The database answers, but its schema is not the one this code's migrations end at."""
