"""POST /v1/search/similar: a JSON body naming an image, or a multipart upload of a copy of one;
read and checked here, then `similar.py` finds the neighbours."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from services.gateway import similar
from services.gateway.api.params import MAX_ID
from services.gateway.api.responses import ERRORS
from services.gateway.core.auth import requires
from services.gateway.core.body_limit import accepts_body
from services.gateway.core.context import ContextDep, SchemaReady
from services.gateway.search import check_k
from shared.db.session import read_once_more
from shared.errors import BadRequest, PayloadTooLarge, ValidationFailed
from shared.schemas import SimilarResults

router = APIRouter(tags=["search"], responses=ERRORS)


class SimilarOptions(BaseModel):
    """How many similar images, and how similar at least (form fields of an upload)."""

    k: int | None = Field(None, ge=1, description="how many results, the image included")
    min_score: float = Field(-1.0, ge=-1.0, le=1.0, allow_inf_nan=False)


class SimilarRequest(SimilarOptions):
    """The JSON body of `POST /v1/search/similar`."""

    image_id: int = Field(..., ge=1, le=MAX_ID, description="an image of the collection")


SIMILAR_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SimilarRequest.model_json_schema()},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "a photo: a copy of a collection photo (matched "
                                               "by sha256) or any other, embedded by the "
                                               "ingest models and not stored"},
                       "k": {"type": "integer", "minimum": 1},
                       "min_score": {"type": "number", "minimum": -1, "maximum": 1}}}},
}}}


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


async def read_photo_form(request: Request, max_bytes: int) -> tuple[SimilarOptions, bytes]:
    """A multipart form's `file` (at most `max_bytes`) and its k/min_score fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("send a multipart form with a 'file'", code="unsupported_media_type")
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationFailed("file: an image file is required")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"file: larger than the limit of {max_bytes} bytes")
        fields = {name: form.get(name) for name in ("k", "min_score") if name in form}
    try:
        return SimilarOptions.model_validate(fields), data
    except ValidationError as exc:
        raise ValidationFailed(_validation_message(exc)) from None


async def read_similar_request(request: Request, max_bytes: int
                               ) -> SimilarRequest | tuple[SimilarOptions, bytes]:
    """The JSON body, or the uploaded example's bytes with k/min_score from the form."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await read_photo_form(request, max_bytes)
    if not ctype.startswith("application/json"):
        raise BadRequest("send JSON {\"image_id\", \"k\"} or a multipart form with a 'file'",
                         code="unsupported_media_type")
    try:
        return SimilarRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ValidationFailed(_validation_message(exc)) from None


@router.post("/v1/search/similar", response_model=SimilarResults, openapi_extra=SIMILAR_BODY,
             dependencies=[requires("search"), SchemaReady, accepts_body("file")])
async def search_similar(request: Request, context: ContextDep,
                         nprobe: Annotated[int | None, Query(ge=1, le=1_000_000)] = None
                         ) -> SimilarResults:
    """Images like an example: by id, or an uploaded photo (a copy of a collection photo
    leads its results; any other photo is embedded by the ingest models, nothing stored)."""
    settings = context.settings
    asked = await read_similar_request(request, settings.max_upload_bytes)
    body = asked[0] if isinstance(asked, tuple) else asked
    k = check_k(body.k, settings.search_max_k)

    def _example(session: Session) -> similar.Example | None:
        if isinstance(asked, tuple):
            return similar.example_by_bytes(session, asked[1], settings.embedding_model)
        return similar.example_by_id(session, asked.image_id, settings.embedding_model)

    example = await anyio.to_thread.run_sync(read_once_more, context.reads, _example)
    if example is None and isinstance(asked, tuple):  # a photo outside the collection
        example = await similar.example_by_photo(asked[1], settings=settings,
                                                 photos=context.photos)
    assert example is not None
    return await similar.find_similar(example=example, k=k, min_score=body.min_score,
                                      nprobe=nprobe, index=context.index,
                                      session_factory=context.reads)
