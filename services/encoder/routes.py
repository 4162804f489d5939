"""Thin routes of the encoder service: validate, run the encoder off the event loop, answer."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.encoder.encoder import TextEncoder
from shared.errors import CapsearchError, ValidationFailed
from shared.schemas import EncodeRequest, EncodeResponse, Health
from shared.web import error_response

MAX_TEXT_CHARS = 10_000

router = APIRouter()


class ModelNotReady(CapsearchError):
    status_code = 503
    code = "model_not_ready"


async def ready_encoder(request: Request) -> TextEncoder:
    """The loaded encoder; waits while it is still loading, 503 when loading failed."""
    try:
        await asyncio.shield(request.app.state.loading)
    except Exception as exc:
        raise ModelNotReady(f"the text encoder failed to load: {exc}") from exc
    encoder: TextEncoder = request.app.state.encoder
    return encoder


EncoderDep = Annotated[TextEncoder, Depends(ready_encoder)]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(request: Request) -> Health | JSONResponse:
    loading: asyncio.Future[None] = request.app.state.loading
    if not loading.done():
        return error_response(503, "model_not_ready", "the text encoder is still loading")
    if loading.cancelled() or loading.exception() is not None:
        return error_response(503, "model_not_ready", "the text encoder failed to load")
    return Health(status="ready", checks={"model": request.app.state.encoder.name})


@router.post("/v1/encode", response_model=EncodeResponse)
async def encode(body: EncodeRequest, encoder: EncoderDep, request: Request) -> Response:
    too_long = [i for i, text in enumerate(body.texts) if len(text) > MAX_TEXT_CHARS]
    if too_long:
        raise ValidationFailed(
            f"texts {too_long[:10]} are longer than {MAX_TEXT_CHARS} characters")
    vectors = await request.app.state.batcher.encode(body.texts)
    # floats from the model: serialised once by pydantic's core, without a validation pass
    answer = EncodeResponse.model_construct(model=encoder.name, dim=encoder.dim,
                                            vectors=vectors.tolist())
    return Response(answer.model_dump_json(), media_type="application/json")
