"""Rendering pages: the template environment, the layout's data, flash messages and redirects."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from agora.api.deps import SESSION_COOKIE, csrf_token, runtime_of
from agora.runtime import Runtime
from agora.services import projects
from agora.services.context import Ctx, Principal

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
FLASH_COOKIE = "agora_flash"

#: Sent with every page: pages carry secrets (one-time passwords, new keys) and CSRF tokens.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["when"] = _when
    templates.env.filters["day"] = _day
    templates.env.filters["compact_json"] = _compact_json
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    return templates


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _day(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d") if value else "—"


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False) if value else ""


def render(
    request: Request,
    ctx: Ctx | None,
    template: str,
    *,
    status: int = 200,
    csrf: str | None = None,
    **data: Any,
) -> HTMLResponse:
    """A page inside the layout. ``ctx`` is None where no database work may happen (error pages)."""
    runtime = runtime_of(request)
    principal: Principal | None = (
        ctx.principal if ctx else getattr(request.state, "principal", None)
    )
    chrome: dict[str, Any] = {"me": principal, "nav_projects": [], "current_project": None}
    if ctx is not None and principal is not None and principal.restriction is None:
        chrome["nav_projects"] = projects.list_projects(ctx)
        current = projects.current_project(ctx)
        chrome["current_project"] = current[0] if current else None
    session = request.cookies.get(SESSION_COOKIE)
    if csrf is None and session and principal is not None:
        csrf = csrf_token(runtime, session)
    flash = _read_flash(request, runtime)
    templates: Jinja2Templates = request.app.state.web_templates
    response = templates.TemplateResponse(
        request,
        template,
        {
            **chrome,
            **data,
            "csrf": csrf or "",
            "flash": flash,
            "path": request.url.path,
            "section": _section(request.url.path),
            "oidc": runtime.settings.oidc,
        },
        status_code=status,
        headers=SECURITY_HEADERS,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def _section(path: str) -> str:
    """Which entry of the navigation the page belongs to."""
    if path.startswith("/projects/") and path.rstrip("/").endswith("/keys"):
        return "keys"
    for prefix in ("/projects", "/account", "/admin/users", "/admin/audit", "/admin/settings"):
        if path.startswith(prefix):
            return prefix.rsplit("/", 1)[-1]
    return "dashboard" if path == "/" else ""


def redirect(request: Request, url: str, flash: str | None = None, kind: str = "ok") -> Response:
    """303 to a page, optionally carrying a one-line message to show there."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        runtime = runtime_of(request)
        response.set_cookie(
            FLASH_COOKIE,
            _flash_signer(runtime).dumps([kind, flash]),
            max_age=60,
            httponly=True,
            secure=runtime.settings.secure_cookies,
            samesite="lax",
            path="/",
        )
    return response


def _flash_signer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.signing_secret, salt="agora-flash")


def _read_flash(request: Request, runtime: Runtime) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, message = _flash_signer(runtime).loads(raw, max_age=60)
    except (BadSignature, ValueError, TypeError):
        return None
    return {"kind": str(kind), "message": str(message)}
