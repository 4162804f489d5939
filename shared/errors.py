"""The one error contract of capsearch.

Every failure a caller can act on is a `CapsearchError` with an HTTP status and a stable code;
the web edge renders it once as `{"error": {"code": ..., "message": ...}}`.

    CapsearchError (500, internal)
    ├── BadRequest (400, bad_request)
    │   ├── InvalidImage (415, invalid_image)
    │   ├── PayloadTooLarge (413, payload_too_large)
    │   └── ValidationFailed (422, validation_error)
    ├── NotFound (404, not_found)
    ├── Conflict (409, conflict)
    └── DependencyError (502, dependency_error)        a downstream service answered badly
        ├── DependencyUnavailable (503, dependency_unavailable)   it is down / unreachable
        └── DependencyTimeout (504, dependency_timeout)          it did not answer in time
"""

from __future__ import annotations


class CapsearchError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(CapsearchError):
    status_code = 400
    code = "bad_request"


class InvalidImage(BadRequest):
    status_code = 415
    code = "invalid_image"


class PayloadTooLarge(BadRequest):
    status_code = 413
    code = "payload_too_large"


class ValidationFailed(BadRequest):
    status_code = 422
    code = "validation_error"


class NotFound(CapsearchError):
    status_code = 404
    code = "not_found"


class Conflict(CapsearchError):
    status_code = 409
    code = "conflict"


class DependencyError(CapsearchError):
    status_code = 502
    code = "dependency_error"


class DependencyUnavailable(DependencyError):
    status_code = 503
    code = "dependency_unavailable"


class DependencyTimeout(DependencyError):
    status_code = 504
    code = "dependency_timeout"
