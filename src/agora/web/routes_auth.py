"""Signing in with a password, then a TOTP code when the account has one.

Between the two steps the browser holds a short-lived signed cookie naming the user whose
password was verified, bound to its pre-session cookie; the password itself is never kept.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import RedirectResponse, Response

from agora.api.deps import csrf_token, runtime_of
from agora.errors import AgoraError, InvalidInput, TOTPRequired
from agora.models import User
from agora.runtime import Runtime
from agora.services import auth
from agora.services.context import Ctx
from agora.web.guards import PRESESSION_COOKIE, AnonCtx, mark_web, presession_csrf, safe_next
from agora.web.render import redirect, render
from agora.web.session import set_session_cookie

router = APIRouter(
    include_in_schema=False, dependencies=[Depends(mark_web), Depends(presession_csrf)]
)
PENDING_COOKIE = "agora_login"
PENDING_MAX_AGE = 300
Field = Annotated[str, Form(max_length=1024)]
_TOO_SLOW = "Your sign-in took too long; please start again."


@router.get("/login")
def login_page(request: Request, ctx: AnonCtx, next: str = "/") -> Response:
    target = safe_next(next)
    if ctx.principal is not None:
        return RedirectResponse(target, status_code=303)
    return _form(request, ctx, "login.html", next=target, username="", sso_url=_sso_url(target))


@router.post("/login")
def login(
    request: Request, ctx: AnonCtx, username: Field = "", password: Field = "", next: Field = "/"
) -> Response:
    target = safe_next(next)
    try:
        if not username.strip() or not password:
            raise InvalidInput("Enter your username and your password")
        user = auth.check_credentials(ctx, username, password, None)
    except TOTPRequired:
        response = RedirectResponse(f"/login/totp?next={quote(target, safe='')}", status_code=303)
        _remember_pending(request, response, username.strip())
        return response
    except AgoraError as exc:
        ctx.db.rollback()
        return _form(
            request,
            ctx,
            "login.html",
            exc,
            next=target,
            username=username.strip()[:64],
            sso_url=_sso_url(target),
        )
    return _sign_in(request, ctx, user, target)


@router.get("/login/totp")
def totp_page(request: Request, ctx: AnonCtx, next: str = "/") -> Response:
    username = _pending_username(request)
    if username is None:
        return redirect(request, "/login", _TOO_SLOW, "warn")
    return _form(request, ctx, "login_totp.html", next=safe_next(next), username=username)


@router.post("/login/totp")
def totp_submit(request: Request, ctx: AnonCtx, code: Field = "", next: Field = "/") -> Response:
    target = safe_next(next)
    username = _pending_username(request)
    if username is None:
        return redirect(request, "/login", _TOO_SLOW, "warn")
    try:
        user = auth.complete_totp(ctx, username, code)
    except AgoraError as exc:
        ctx.db.rollback()
        return _form(request, ctx, "login_totp.html", exc, next=target, username=username)
    return _sign_in(request, ctx, user, target)


def _sso_url(target: str) -> str:
    return "/auth/oidc/login" + ("" if target == "/" else "?next=" + quote(target, safe=""))


def _sign_in(request: Request, ctx: Ctx, user: User, target: str) -> Response:
    runtime = runtime_of(request)
    signed = auth.start_session(ctx, user, "web", method="password")
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, runtime, signed.token)
    response.delete_cookie(PENDING_COOKIE, path="/login")
    return response


def _form(
    request: Request, ctx: Ctx, template: str, error: AgoraError | None = None, **data: str
) -> Response:
    """A sign-in form, its CSRF token bound to the pre-session cookie (set here if missing)."""
    runtime = runtime_of(request)
    binding = request.cookies.get(PRESESSION_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        ctx,
        template,
        status=error.status if error else 200,
        csrf=csrf_token(runtime, binding),
        error=error.detail if error else None,
        **data,
    )
    if binding != request.cookies.get(PRESESSION_COOKIE):
        response.set_cookie(
            PRESESSION_COOKIE,
            binding,
            httponly=True,
            secure=runtime.settings.secure_cookies,
            samesite="lax",
            path="/",
        )
    return response


def _signer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.signing_secret, salt="agora-login-totp")


def _binding(runtime: Runtime, request: Request) -> str:
    return runtime.keyring.mac("pending-login:" + request.cookies.get(PRESESSION_COOKIE, ""))


def _remember_pending(request: Request, response: Response, username: str) -> None:
    runtime = runtime_of(request)
    response.set_cookie(
        PENDING_COOKIE,
        _signer(runtime).dumps([username, _binding(runtime, request)]),
        max_age=PENDING_MAX_AGE,
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
        path="/login",
    )


def _pending_username(request: Request) -> str | None:
    """The user whose password this browser proved in the last five minutes, if any."""
    runtime = runtime_of(request)
    raw = request.cookies.get(PENDING_COOKIE)
    if not raw or not request.cookies.get(PRESESSION_COOKIE):
        return None
    try:
        username, binding = _signer(runtime).loads(raw, max_age=PENDING_MAX_AGE)
    except (BadSignature, ValueError, TypeError):
        return None
    if not isinstance(username, str) or binding != _binding(runtime, request):
        return None
    return username
