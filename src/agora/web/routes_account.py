"""The signed-in user's own account: profile, password, TOTP, signing out."""

from __future__ import annotations

import re
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, Request
from markupsafe import Markup
from starlette.responses import Response

from agora.api.deps import runtime_of
from agora.errors import AgoraError, InvalidInput
from agora.services import auth, users
from agora.services.context import Ctx
from agora.web.forms import undo
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render
from agora.web.session import clear_session_cookie

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])
Field = Annotated[str, Form(max_length=1024)]
_BASE32 = re.compile(r"^[A-Z2-7]{16,128}$")


@router.get("/logout")
def logout_page(request: Request, ctx: PageCtx) -> Response:
    return render(request, ctx, "logout.html")


@router.post("/logout")
def logout(request: Request, ctx: PageCtx) -> Response:
    auth.logout(ctx)
    response = redirect(request, "/login", "You are signed out.")
    clear_session_cookie(response, runtime_of(request))
    return response


@router.get("/account")
def account(request: Request, ctx: PageCtx) -> Response:
    return render(request, ctx, "account.html", user=users.me(ctx))


@router.get("/account/password")
def password_page(request: Request, ctx: PageCtx) -> Response:
    return render(request, ctx, "password.html")


@router.post("/account/password")
def change_password(
    request: Request, ctx: PageCtx, current: Field = "", new: Field = "", confirm: Field = ""
) -> Response:
    try:
        if new != confirm:
            raise InvalidInput("The two new passwords differ; type the same one twice")
        users.change_own_password(ctx, current, new)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return render(request, ctx, "password.html", status=exc.status, error=exc.detail)
    return redirect(request, "/", "Your password was changed.")


@router.get("/account/totp")
def totp_page(request: Request, ctx: PageCtx) -> Response:
    return render(request, ctx, "totp.html", user=users.me(ctx), enrolment=None)


@router.post("/account/totp/setup")
def totp_setup(request: Request, ctx: PageCtx) -> Response:
    try:
        enrolment = auth.totp_begin(ctx)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _totp(request, ctx, None, exc)
    return _totp(request, ctx, _enrolment(enrolment.secret, enrolment.uri))


@router.post("/account/totp/confirm")
def totp_confirm(
    request: Request, ctx: PageCtx, code: Field = "", secret: Field = "", uri: Field = ""
) -> Response:
    try:
        auth.totp_confirm(ctx, code)
    except AgoraError as exc:
        undo(ctx, request, exc)
        # Show the same secret again (the form sent back what this page showed it).
        shown = _BASE32.match(secret) and uri.startswith("otpauth://totp/")
        return _totp(request, ctx, _enrolment(secret, uri) if shown else None, exc)
    return redirect(request, "/account", "Two-factor sign-in is on.")


@router.post("/account/totp/disable")
def totp_disable(
    request: Request, ctx: PageCtx, password: Field = "", code: Field = ""
) -> Response:
    try:
        auth.totp_disable(ctx, password, code)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _totp(request, ctx, None, exc)
    return redirect(request, "/account", "Two-factor sign-in is off.")


def _enrolment(secret: str, uri: str) -> dict[str, object]:
    qr = segno.make(uri, error="m").svg_inline(scale=5, dark="#0f172a", light="#ffffff")
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    # segno's SVG is path data only: nothing of the URI appears in it as text or markup.
    return {"secret": secret, "grouped": grouped, "uri": uri, "qr": Markup(qr)}  # noqa: S704


def _totp(
    request: Request, ctx: Ctx, enrolment: dict[str, object] | None, error: AgoraError | None = None
) -> Response:
    return render(
        request,
        ctx,
        "totp.html",
        status=error.status if error else 200,
        user=users.me(ctx),
        enrolment=enrolment,
        error=error.detail if error else None,
    )
