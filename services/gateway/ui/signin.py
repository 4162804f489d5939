"""Signing a browser in and out: `GET /sign-in` shows the form, `POST /sign-in` checks the
API key and sets the session cookie (`core/sessions.py`), `POST /sign-out` clears it.

These routes declare no scope: there is no caller yet. AuthMiddleware lets them through with a
token from the client address's rate-limit bucket, so guessing keys here is throttled like
guessing them on the API; a cross-site POST never reaches them (`core/origin.py`).
"""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.core.context import ContextDep, GatewayContext
from services.gateway.core.sessions import SessionCookies
from services.gateway.ui.pages import render
from shared.apikeys import KeyInfo, effective_scopes, verify_key

router = APIRouter(include_in_schema=False)

MAX_KEY_CHARS = 256


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _lifetime(seconds: float) -> str:
    days, hours = seconds / 86400, seconds / 3600
    return f"{days:.0f} days" if days >= 2 else f"{hours:.0f} hours" if hours >= 2 \
        else f"{seconds / 60:.0f} minutes"


def _cookies(request: Request) -> SessionCookies | None:
    return getattr(request.app.state, "sessions", None)


def _form(request: Request, next_url: str, error: str | None = None,
          status_code: int = 200) -> HTMLResponse:
    cookies = _cookies(request)
    lifetime = _lifetime(cookies.lifetime_s) if cookies is not None else ""
    return render(request, "sign_in.html", status_code=status_code, next=next_url,
                  error=error, lifetime=lifetime)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    """The sign-in form (keys off: nothing to sign in to, straight to the search page)."""
    if _cookies(request) is None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, safe_next(next))


def _check_key(context: GatewayContext, key: str) -> KeyInfo | None:
    context.ensure_schema()
    return verify_key(context.session_factory, key)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, context: ContextDep) -> Response:
    """Check the key of the form's `api_key` field; on success a session cookie and 303."""
    cookies = _cookies(request)
    async with request.form(max_files=0, max_fields=4) as form:
        key = str(form.get("api_key") or "").strip()
        next_url = safe_next(str(form.get("next") or "/"))
    if cookies is None:
        return RedirectResponse(next_url, status_code=303)
    info = None
    if key and len(key) <= MAX_KEY_CHARS:
        info = await anyio.to_thread.run_sync(partial(_check_key, context, key))
    if info is None:
        return _form(request, next_url, "That API key is not valid (unknown or revoked).", 401)
    if "search" not in effective_scopes(info.scopes):
        return _form(request, next_url, "That key cannot search: the web UI needs a key with "
                     "the search scope.", 403)
    response = RedirectResponse(next_url, status_code=303)
    cookies.issue(response, info, request.scope)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """Clear the session cookie and go back to the sign-in page."""
    response = RedirectResponse("/sign-in", status_code=303)
    cookies = _cookies(request)
    if cookies is not None:
        cookies.clear(response, request.scope)
    return response
