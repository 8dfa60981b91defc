"""Errors as pages: the API's handlers stay in charge; browsers get HTML instead of problem+json.

The API's handlers (agora.api.problems) still run first for every error, so their side effects
(the audit line for a refused change) happen once, whoever asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from agora.api.deps import SESSION_COOKIE, client_addr, runtime_of
from agora.errors import AgoraError, Unauthenticated
from agora.services import auth
from agora.services.context import Ctx
from agora.web.guards import Redirect, login_url
from agora.web.render import render
from agora.web.session import clear_session_cookie

Handler = Callable[[Request, Any], Response | Awaitable[Response]]

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Page not found",
    405: "Not available this way",
    413: "Too much data",
    422: "Invalid input",
    429: "Too many attempts",
    500: "Something went wrong",
}


def wants_html(request: Request) -> bool:
    if getattr(request.state, "web_page", False):
        return True
    path = request.url.path
    return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, detail: str, title: str | None = None) -> Response:
    return render(
        request,
        None,
        "error.html",
        status=status,
        status_code=status,
        title=title or _TITLES.get(status, "Error"),
        detail=detail,
    )


def _recognise(request: Request) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return
    runtime = runtime_of(request)
    with runtime.db.session() as db, contextlib.suppress(Unauthenticated):
        ctx = Ctx(db=db, runtime=runtime, client_addr=client_addr(request))
        request.state.principal = auth.authenticate(ctx, token)
        db.commit()


def install(app: FastAPI) -> None:
    api: dict[Any, Handler] = {}
    for kind in (AgoraError, StarletteHTTPException, RequestValidationError, Exception):
        handler = app.exception_handlers.get(kind)
        if handler is None:
            raise RuntimeError(f"install the API's error handlers before the pages ({kind})")
        api[kind] = handler

    async def the_api(kind: type[Exception], request: Request, exc: Exception) -> Response:
        response = api[kind](request, exc)
        return await response if inspect.isawaitable(response) else response

    async def domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AgoraError)
        response = await the_api(AgoraError, request, exc)
        if not wants_html(request):
            return response
        if isinstance(exc, Unauthenticated):
            redirect = RedirectResponse(login_url(request), status_code=303)
            clear_session_cookie(redirect, runtime_of(request))
            return redirect
        page = error_page(request, exc.status, exc.detail, _TITLES.get(exc.status, exc.title))
        if "retry-after" in response.headers:
            page.headers["Retry-After"] = response.headers["retry-after"]
        return page

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        response = await the_api(StarletteHTTPException, request, exc)
        if not wants_html(request):
            return response
        if getattr(request.state, "principal", None) is None:
            # No page route ran (unknown address): still show who is signed in.
            await asyncio.to_thread(_recognise, request)
        if exc.status_code == 404:
            detail = f"There is no page at {request.url.path}."
        elif exc.status_code == 405:
            detail = "This address does not accept that kind of request."
        else:
            detail = exc.detail if isinstance(exc.detail, str) else ""
        return error_page(request, exc.status_code, detail)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        response = await the_api(RequestValidationError, request, exc)
        if not wants_html(request):
            return response
        if any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):
            return error_page(request, 404, f"There is no page at {request.url.path}.")
        return error_page(request, 422, "The form was not filled in as expected; go back, retry.")

    async def unexpected(request: Request, exc: Exception) -> Response:
        response = await the_api(Exception, request, exc)
        if not wants_html(request):
            return response
        return error_page(request, 500, "The server could not show this page; it has been logged.")

    async def redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        return RedirectResponse(exc.url, status_code=303)

    app.add_exception_handler(AgoraError, domain)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(Redirect, redirect)
