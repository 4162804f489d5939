"""/v1/imports: start a server-side import of a folder or bucket prefix (`imports.py`), and
follow its progress."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Request

from services.gateway import imports
from services.gateway.api.params import MAX_ID
from services.gateway.api.responses import ERRORS
from services.gateway.core.auth import requires
from services.gateway.core.context import ContextDep, SchemaReady
from shared.schemas import ImportCreate, ImportPublic

router = APIRouter(tags=["images"], responses=ERRORS, dependencies=[SchemaReady])


def get_import_runner(request: Request) -> imports.ImportRunner:
    """The import jobs this gateway process runs (made on first use)."""
    runner: imports.ImportRunner | None = getattr(request.app.state, "imports", None)
    if runner is None:
        runner = request.app.state.imports = imports.ImportRunner()
    return runner


@router.post("/v1/imports", status_code=202, response_model=ImportPublic,
             dependencies=[requires("admin")])
async def start_import(body: ImportCreate, context: ContextDep,
                       runner: Annotated[imports.ImportRunner, Depends(get_import_runner)]
                       ) -> ImportPublic:
    """Import a server-side folder or a bucket prefix (only below the configured ones)."""
    source = await anyio.to_thread.run_sync(partial(
        imports.resolve_source, body, settings=context.settings, store=context.store))
    job_id = await anyio.to_thread.run_sync(imports.create_job, context.session_factory, source)
    runner.start(job_id, source, context)
    return await anyio.to_thread.run_sync(imports.read_job, context.session_factory, job_id)


@router.get("/v1/imports/{import_id}", response_model=ImportPublic,
            dependencies=[requires("write")])
def read_import(context: ContextDep,
                import_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ImportPublic:
    """How far an import got: files listed, processed, added, duplicates, failed (+ why)."""
    return imports.read_job(context.session_factory, import_id)
