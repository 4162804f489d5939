"""A request-body cap for the whole app, answered with the JSON error contract.

Every file part is already read with its own cap; this bounds what the multipart parser spools
at all (a declared Content-Length is refused before reading, a chunked body as it streams).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import Settings
from shared.web import error_response

# multipart framing per file part (headers, boundary) and the small form fields
PART_OVERHEAD_BYTES = 16 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024


def upload_body_limit(settings: Settings) -> int:
    """The largest request body POST /v1/images accepts: every file at its cap, plus framing."""
    per_file = settings.max_upload_bytes + PART_OVERHEAD_BYTES
    return settings.max_files_per_request * per_file + FORM_OVERHEAD_BYTES


class BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing re-raises it as is
    and the app's error handler renders it (413, payload_too_large)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body exceeds {limit} bytes")


class BodySizeLimit:
    """Pure ASGI middleware: refuse request bodies larger than `limit` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, "payload_too_large",
                                      f"the request body exceeds {self.limit} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)
