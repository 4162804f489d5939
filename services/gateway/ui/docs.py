"""`/docs`: Swagger UI for the API, served from this server (the `swagger-ui-bundle-v2`
package's files), never from a CDN: nothing from another origin runs on the origin of the web
UI and its session cookie, and the docs work on a machine without internet. The page's
script is a static file, so the same strict Content-Security-Policy as the UI's holds.
`CAPSEARCH_API_DOCS=false` turns /docs and /openapi.json off.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.ui.pages import templates

router = APIRouter(include_in_schema=False)
ASSETS = "/static/swagger"
# Swagger UI styles some elements inline and draws its icons from data: URIs
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'")


@router.get("/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    response = templates.TemplateResponse(request, "docs.html", {"assets": ASSETS})
    response.headers.update({"Content-Security-Policy": DOCS_CSP,
                             "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "same-origin"})
    return response


def mount_docs(app: FastAPI) -> None:
    """The docs page and its assets (before the UI's /static mount, which would shadow them)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.include_router(router)
