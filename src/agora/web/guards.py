"""Who may see a page, and whether a form really came from one: the pages' dependencies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request

from agora.api.deps import SESSION_COOKIE, CtxDep, client_addr, csrf_ok, runtime_of
from agora.errors import Forbidden, NotFound, Unauthenticated
from agora.services import auth
from agora.services.context import Ctx

#: Random value a browser holds before it signs in; the login forms' CSRF tokens are bound to it.
PRESESSION_COOKIE = "agora_csrf"
CSRF_FAILED = (
    "This form has expired or was not sent from an Agora page, so it was refused "
    "(CSRF check failed). Reload the page and try again."
)
_SAFE = {"GET", "HEAD", "OPTIONS"}
#: Where a restricted session may go (and where every other page sends it).
_RESTRICTED_PAGES = {"password": "/account/password", "totp": "/account/totp"}


class Redirect(Exception):
    """Raised by a dependency to send the browser elsewhere (303)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def mark_web(request: Request) -> None:
    """Errors on this request are answered with HTML pages, not problem+json."""
    request.state.web_page = True


async def session_csrf(request: Request) -> None:
    await _check_csrf(request, request.cookies.get(SESSION_COOKIE))


async def presession_csrf(request: Request) -> None:
    await _check_csrf(request, request.cookies.get(PRESESSION_COOKIE))


async def _check_csrf(request: Request, binding: str | None) -> None:
    if request.method in _SAFE:
        return
    sent = (await request.form()).get("csrf_token")
    if not csrf_ok(runtime_of(request), binding, sent if isinstance(sent, str) else None):
        raise Forbidden(CSRF_FAILED)


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (other hosts, odd forms) is '/'."""
    if not value or "\\" in value or any(ord(c) < 32 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/"
    if parts.path.startswith(("/login", "/logout")):
        return "/"
    return value


def login_url(request: Request) -> str:
    if request.method != "GET" or request.url.path == "/":
        return "/login"
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def optional_session(request: Request) -> Iterator[Ctx]:
    """A transaction for the sign-in pages: the caller may or may not be signed in."""
    runtime = runtime_of(request)
    with runtime.db.session(write=request.method not in _SAFE) as db:
        ctx = Ctx(db=db, runtime=runtime, client_addr=client_addr(request))
        try:
            token = request.cookies.get(SESSION_COOKIE)
            if token:
                with contextlib.suppress(Unauthenticated):
                    ctx.principal = auth.authenticate(ctx, token)
            yield ctx
            db.commit()
        except BaseException:
            db.rollback()
            raise


def signed_in(request: Request, ctx: CtxDep) -> Ctx:
    """The caller must be signed in; a restricted session only reaches the page that lifts it."""
    p = ctx.principal
    if p is None:
        raise Redirect(login_url(request))
    if p.restriction is not None:
        allowed = _RESTRICTED_PAGES.get(p.restriction, "/account/password")
        if not request.url.path.startswith((allowed, "/logout")):
            raise Redirect(allowed)
    return ctx


PageCtx = Annotated[Ctx, Depends(signed_in)]


def admins_only(request: Request, ctx: PageCtx) -> Ctx:
    """Admin pages do not exist for anyone else."""
    assert ctx.principal is not None
    if not ctx.principal.is_admin:
        raise NotFound(f"There is nothing at {request.url.path}")
    return ctx


AnonCtx = Annotated[Ctx, Depends(optional_session, scope="function")]
AdminCtx = Annotated[Ctx, Depends(admins_only)]
