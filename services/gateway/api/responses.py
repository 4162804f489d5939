"""What the /v1 routes document and send besides their schemas: the error responses, and blobs
with an ETag."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Response

from services.gateway.images import Blob
from shared.schemas import ErrorResponse

# every error a /v1 route may answer, in the one error contract (documented in OpenAPI)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
}

# the ETags a caller already holds: a blob route answers 304 when the blob's is among them
IfNoneMatch = Annotated[str | None, Header()]


# an image is shown, never sniffed into HTML or run: whatever bytes an upload smuggled in
# (a polyglot, a comment), a browser opening the URL gets no script, no plugin, no form
BLOB_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def blob_response(blob: Blob, if_none_match: str | None) -> Response:
    """The blob, or 304 when the caller already holds it (its ETag is in If-None-Match)."""
    headers = {"ETag": blob.etag, "Cache-Control": blob.cache_control,
               **BLOB_SECURITY_HEADERS}
    if if_none_match is not None and blob.etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(content=blob.data, media_type=blob.content_type, headers=headers)
