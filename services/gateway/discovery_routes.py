"""Routes for finding and bringing in photos beyond text search: find similar, the sources
(folders) a filter can name, and bulk imports with their progress."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.gateway import imports, similar
from services.gateway.dbready import SchemaReady
from services.gateway.deps import MAX_ID, ContextDep, SessionDep, require_scope
from services.gateway.filters import SourceCount, list_sources
from services.gateway.routes import ERRORS
from shared.errors import BadRequest, PayloadTooLarge, ValidationFailed
from shared.schemas import ImportCreate, ImportPublic, SimilarResults

router = APIRouter(responses=ERRORS, dependencies=[SchemaReady])

SearchScope = Depends(require_scope("search"))
WriteScope = Depends(require_scope("write"))
AdminScope = Depends(require_scope("admin"))

SIMILAR_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": similar.SimilarRequest.model_json_schema()},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "a photo of the collection (matched by sha256)"},
                       "k": {"type": "integer", "minimum": 1},
                       "min_score": {"type": "number", "minimum": -1, "maximum": 1}}}},
}}}


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


async def _similar_request(request: Request, max_bytes: int
                           ) -> similar.SimilarRequest | tuple[similar.SimilarOptions, bytes]:
    """The JSON body, or the uploaded example's bytes with k/min_score from the form."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=4) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ValidationFailed("file: an image file is required")
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise PayloadTooLarge(f"file: larger than the limit of {max_bytes} bytes")
            fields = {name: form.get(name) for name in ("k", "min_score") if name in form}
        try:
            return similar.SimilarOptions.model_validate(fields), data
        except ValidationError as exc:
            raise ValidationFailed(_validation_message(exc)) from None
    if not ctype.startswith("application/json"):
        raise BadRequest("send JSON {\"image_id\", \"k\"} or a multipart form with a 'file'",
                         code="unsupported_media_type")
    try:
        return similar.SimilarRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ValidationFailed(_validation_message(exc)) from None


@router.post("/v1/search/similar", response_model=SimilarResults, tags=["search"],
             dependencies=[SearchScope], openapi_extra=SIMILAR_BODY)
async def search_similar(request: Request, context: ContextDep,
                         nprobe: Annotated[int | None, Query(ge=1, le=1_000_000)] = None
                         ) -> SimilarResults:
    """Images like an example (by id, or an uploaded copy of a collection photo), it first."""
    settings = context.settings
    asked = await _similar_request(request, settings.max_upload_bytes)
    body = asked[0] if isinstance(asked, tuple) else asked
    k = similar.check_k(body.k, settings.search_max_k)

    def _example() -> similar.Example:
        with context.session_factory() as session:
            if isinstance(asked, tuple):
                return similar.example_by_bytes(session, asked[1], settings.embedding_model)
            return similar.example_by_id(session, asked.image_id, settings.embedding_model)

    example = await anyio.to_thread.run_sync(_example)
    return await similar.find_similar(example=example, k=k, min_score=body.min_score,
                                      nprobe=nprobe, index=context.index,
                                      session_factory=context.session_factory)


@router.get("/v1/sources", response_model=list[SourceCount], tags=["images"],
            dependencies=[SearchScope])
def read_sources(session: SessionDep,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[SourceCount]:
    """The folders/sources of the collection with their image counts (for the source filter)."""
    return list_sources(session, limit)


def get_import_runner(request: Request) -> imports.ImportRunner:
    runner: imports.ImportRunner | None = getattr(request.app.state, "imports", None)
    if runner is None:
        runner = request.app.state.imports = imports.ImportRunner()
    return runner


@router.post("/v1/imports", status_code=202, response_model=ImportPublic,
             tags=["images"], dependencies=[AdminScope])
async def start_import(body: ImportCreate, context: ContextDep,
                       runner: Annotated[imports.ImportRunner, Depends(get_import_runner)]
                       ) -> ImportPublic:
    """Import a server-side folder or a bucket prefix (only below the configured ones)."""
    source = await anyio.to_thread.run_sync(partial(
        imports.resolve_source, body, settings=context.settings, store=context.store))
    job_id = await anyio.to_thread.run_sync(imports.create_job, context.session_factory, source)
    runner.start(job_id, source, context)
    return await anyio.to_thread.run_sync(imports.read_job, context.session_factory, job_id)


@router.get("/v1/imports/{import_id}", response_model=ImportPublic, tags=["images"],
            dependencies=[WriteScope])
def read_import(context: ContextDep,
                import_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ImportPublic:
    """How far an import got: files listed, processed, added, duplicates, failed (+ why)."""
    return imports.read_job(context.session_factory, import_id)
