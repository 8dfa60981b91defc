"""Request dependencies: the runtime, the caller and a transaction per request."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from agora.errors import Forbidden
from agora.runtime import Runtime
from agora.services import auth
from agora.services.context import Ctx

SESSION_COOKIE = "agora_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE = {"GET", "HEAD", "OPTIONS"}


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


def csrf_token(runtime: Runtime, binding: str) -> str:
    """A CSRF token bound to a session (or pre-session) cookie value."""
    return runtime.keyring.mac("csrf:" + binding)


def csrf_ok(runtime: Runtime, binding: str | None, sent: str | None) -> bool:
    if not binding or not sent:
        return False
    # Bytes: compare_digest refuses str with non-ASCII characters (a 500, not a refusal).
    return hmac.compare_digest(csrf_token(runtime, binding).encode(), sent.encode())


def credentials(request: Request) -> tuple[str | None, bool]:
    """The token the request carries and whether it came from the session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


@contextmanager
def request_ctx(request: Request, *, authenticate: bool = True) -> Iterator[Ctx]:
    """A transaction for one request, with the caller authenticated; commits on success."""
    rt = runtime_of(request)
    with rt.db.session(write=request.method not in _SAFE) as db:
        ctx = Ctx(db=db, runtime=rt, client_addr=client_addr(request))
        try:
            token, from_cookie = credentials(request)
            if token and authenticate:
                if (
                    from_cookie
                    and request.method not in _SAFE
                    and request.url.path.startswith("/api/")
                    and not csrf_ok(rt, token, request.headers.get(CSRF_HEADER))
                ):
                    raise Forbidden(
                        f"Requests signed in by cookie must send the {CSRF_HEADER} header"
                    )
                ctx.principal = auth.authenticate(ctx, token)
                request.state.principal = ctx.principal
            yield ctx
            db.commit()
            for callback in db.info.pop("after_commit", []):
                callback()
        except BaseException:
            db.rollback()
            raise


def open_ctx(request: Request) -> Iterator[Ctx]:
    with request_ctx(request) as ctx:
        yield ctx


def open_plain_ctx(request: Request) -> Iterator[Ctx]:
    """No caller authentication: for endpoints that check a credential of their own."""
    with request_ctx(request, authenticate=False) as ctx:
        yield ctx


CtxDep = Annotated[Ctx, Depends(open_ctx, scope="function")]
PlainCtxDep = Annotated[Ctx, Depends(open_plain_ctx, scope="function")]
